//! `tojson` as transformers' chat templates see it: Python's `json.dumps(x, ensure_ascii=False,
//! indent=None, separators=None, sort_keys=False)`. Separators `", "` / `": "` (`","` with an
//! indent), insertion order kept, no HTML escaping, floats as Python's `repr`.

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind};

struct Style {
    indent: Option<String>,
    ensure_ascii: bool,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// Longest indent string accepted (a template asking for more is refused, not obeyed).
const MAX_INDENT: usize = 64;

pub fn tojson_filter(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::Number => {
            let n = i64::try_from(v)?;
            if !(0..=MAX_INDENT as i64).contains(&n) {
                return Err(Error::new(ErrorKind::InvalidOperation, "tojson indent is too large"));
            }
            Some(" ".repeat(n as usize))
        }
        Some(v) => match v.as_str() {
            Some(s) if s.len() <= MAX_INDENT => Some(s.to_string()),
            _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson indent must be a small int or string")),
        },
    };
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let (item_sep, key_sep) = match separators {
        Some(s) if !s.is_none() => {
            let a: Vec<Value> = s.try_iter()?.collect();
            match (a.first().and_then(|v| v.as_str()), a.get(1).and_then(|v| v.as_str()), a.len()) {
                (Some(i), Some(k), 2) => (i.to_string(), k.to_string()),
                _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson separators must be two strings")),
            }
        }
        _ => (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()),
    };
    kwargs.assert_all_used()?;
    let style = Style { indent, ensure_ascii: ensure_ascii.unwrap_or(false), item_sep, key_sep, sort_keys: sort_keys.unwrap_or(false) };
    let mut out = String::new();
    dump(&value, &style, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

/// Jinja's `indent(width=4, first=False, blank=False)`, with the width bounded: minijinja's own
/// builds the padding from any width a template asks for.
pub fn indent_filter(s: String, width: Option<Value>, kwargs: Kwargs) -> Result<String, Error> {
    let width = width.or(kwargs.get::<Option<Value>>("width")?);
    let first: bool = kwargs.get::<Option<bool>>("first")?.unwrap_or(false);
    let blank: bool = kwargs.get::<Option<bool>>("blank")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let pad = match width {
        None => "    ".to_string(),
        Some(w) if w.kind() == ValueKind::Number => {
            let n = i64::try_from(w)?;
            if !(0..=MAX_INDENT as i64).contains(&n) {
                return Err(Error::new(ErrorKind::InvalidOperation, "indent width is too large"));
            }
            " ".repeat(n as usize)
        }
        Some(w) => match w.as_str() {
            Some(p) if p.len() <= MAX_INDENT => p.to_string(),
            _ => return Err(Error::new(ErrorKind::InvalidOperation, "indent width must be a small int or string")),
        },
    };
    let mut out = String::with_capacity(s.len());
    for (i, line) in s.split_inclusive('\n').enumerate() {
        let is_blank = line.trim_end_matches(['\n', '\r']).trim().is_empty();
        if (i > 0 || first) && (blank || !is_blank) {
            out.push_str(&pad);
        }
        out.push_str(line);
    }
    Ok(out)
}

fn newline(style: &Style, level: usize, out: &mut String) {
    if let Some(ind) = &style.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
}

fn dump(v: &Value, style: &Style, level: usize, out: &mut String) -> Result<(), Error> {
    if level > 128 {
        return Err(Error::new(ErrorKind::InvalidOperation, "tojson: value nested too deeply"));
    }
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                out.push_str(&py_float(f64::try_from(v.clone())?));
            }
        }
        ValueKind::String => string(v.as_str().unwrap_or_default(), style.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(style, level + 1, out);
                dump(item, style, level + 1, out)?;
            }
            newline(style, level, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if style.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(style, level + 1, out);
                // Python turns non-string keys into strings.
                match k.as_str() {
                    Some(s) => string(s, style.ensure_ascii, out),
                    None => string(&k.to_string(), style.ensure_ascii, out),
                }
                out.push_str(&style.key_sep);
                dump(&v.get_item(k)?, style, level + 1, out)?;
            }
            newline(style, level, out);
            out.push('}');
        }
        _ => string(&v.to_string(), style.ensure_ascii, out),
    }
    Ok(())
}

fn string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, scientific below 1e-4 and from 1e16,
/// exponent with a sign and at least two digits, integral values with ".0".
pub fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{x:e}"); // shortest digits, e.g. "1.5e16", "-1e-7"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let fixed = format!("{x}");
        if fixed.contains('.') {
            fixed
        } else {
            format!("{fixed}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        for (x, want) in [
            (3.0, "3.0"),
            (0.1, "0.1"),
            (1e-7, "1e-07"),
            (1e21, "1e+21"),
            (1.5e16, "1.5e+16"),
            (123456.789, "123456.789"),
            (0.0001, "0.0001"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (9999999999999998.0, "9999999999999998.0"),
        ] {
            assert_eq!(py_float(x), want, "{x}");
        }
    }
}
