#!/usr/bin/env python3
"""Build the small supervised tasks in data/tasks/ from data this machine's
Debian system ships.  Standard library only, no network.

Tasks (each: train.jsonl = 64 examples, test.jsonl = 96 held-out examples):

  debian-section  English.  A Debian package's short description -> its
                  Debian archive section (one of six labels).  Source: the
                  bookworm main amd64 Packages index apt keeps under
                  /var/lib/apt/lists (decompressed with the `lz4` command).
  ko-ui-strings   Korean.  A Korean UI string -> its original English UI
                  string.  Source: the Korean gettext catalog of
                  shared-mime-info (/usr/share/locale/ko/LC_MESSAGES).

Every line is OpenAI chat form:
  {"messages": [{"role": "user", "content": "<instruction>\\n\\n<input>"},
                {"role": "assistant", "content": "<answer>"}]}

The output, data/tasks/README.md included, is a pure function of the source
files: run it twice and the bytes are identical.  The script checks the
sources against the hashes they had when the tasks were first made and stops
if they changed (an `apt-get update` or a package upgrade), unless
--allow-source-change is given; the README then records the new hashes.

Usage: python3 scripts/make-tune-tasks.py [--out DIR] [--allow-source-change]
"""

import argparse
import collections
import difflib
import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys

SEED = 20261129
N_TRAIN = 64
N_TEST = 96

# ----------------------------------------------------------------------------
# Sources and the hashes they had when the committed task files were made.

APT_LISTS = "/var/lib/apt/lists"
PACKAGES_LZ4 = APT_LISTS + "/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
INRELEASE = APT_LISTS + "/deb.debian.org_debian_dists_bookworm_InRelease"
INRELEASE_ENTRY = "main/binary-amd64/Packages"
ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DPKG_STATUS = "/var/lib/dpkg/status"
EXPECTED_PACKAGES_SHA256 = "81097cabc561cf9c51576cd57738e84d8d636762a69691e7adf0645882f402c9"

KO_LOCALE_DIR = "/usr/share/locale/ko/LC_MESSAGES"
VIM_LANG_GLOB_DIRS = ["/usr/share/vim/vim90/lang/ko/LC_MESSAGES",
                      "/usr/share/vim/vim90/lang/ko.UTF-8/LC_MESSAGES"]
KO_CATALOG = KO_LOCALE_DIR + "/shared-mime-info.mo"
EXPECTED_KO_CATALOG_SHA256 = "910dbf6844571a4066300ade59ea08d3c16b7cb82a6221f960d3b4e046df4006"

# ----------------------------------------------------------------------------
# Task definitions.

SECTIONS = ["doc", "fonts", "games", "perl", "python", "sound"]
SECTION_TEST_PER_LABEL = N_TEST // len(SECTIONS)  # 16

SECTION_INSTRUCTION = (
    "Which Debian archive section does the package with this short description "
    "belong to? Answer with exactly one of these section names: "
    + ", ".join(SECTIONS) + "."
)

KO_INSTRUCTION = (
    "Translate this Korean software UI string back to the original English UI "
    "string. Answer with the English string only."
)

# ----------------------------------------------------------------------------
# Small helpers.


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def sha256_file(path):
    with open(path, "rb") as f:
        return sha256_bytes(f.read())


def run(cmd):
    """Output of a command, or None if it is missing or fails."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=dict(os.environ, LC_ALL="C"))
    except OSError:
        return None
    if p.returncode != 0:
        return None
    return p.stdout.decode("utf-8", "replace")


def dpkg_owner(path):
    """(package, version) of the installed Debian package that ships path."""
    out = run(["dpkg-query", "-S", path])
    if not out:
        return None, None
    pkg = out.splitlines()[0].split(":", 1)[0].strip()
    ver = run(["dpkg-query", "-W", "-f=${Version}", pkg])
    return pkg, (ver or "").strip() or None


def dpkg_version(pkg):
    ver = run(["dpkg-query", "-W", "-f=${Version}", pkg])
    return (ver or "").strip() or None


def dpkg_md5_matches(pkg, path):
    """True/False: does path still have the md5 dpkg recorded; None: unknown."""
    for arch_suffix in ("", ":amd64"):
        md5s = "/var/lib/dpkg/info/%s%s.md5sums" % (pkg, arch_suffix)
        if os.path.exists(md5s):
            rel = path.lstrip("/")
            with open(md5s, encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.split(None, 1)
                    if len(parts) == 2 and parts[1].strip() == rel:
                        with open(path, "rb") as g:
                            return hashlib.md5(g.read()).hexdigest() == parts[0]
    return None


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for instruction, inp, answer in rows:
            obj = {"messages": [
                {"role": "user", "content": instruction + "\n\n" + inp},
                {"role": "assistant", "content": answer},
            ]}
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


def check_expected(what, actual, expected, allow):
    if actual == expected:
        return
    msg = ("%s changed: sha256 %s, the committed tasks were made from %s"
           % (what, actual, expected))
    if allow:
        print("warning: " + msg, file=sys.stderr)
    else:
        sys.exit("error: " + msg + "\n(rerun with --allow-source-change to "
                 "regenerate from the new data; the README records the new hash)")


# ----------------------------------------------------------------------------
# Task 1: debian-section.


def parse_deb822(text):
    """Stanzas of a Packages/status file as dicts of the first line of each field."""
    recs, cur, last = [], {}, None
    for line in text.split("\n"):
        if not line.strip():
            if cur:
                recs.append(cur)
            cur, last = {}, None
            continue
        if line[0] in " \t":
            if last is not None:
                cur.setdefault(last + "+", []).append(line[1:])
            continue
        k, _, v = line.partition(":")
        last = k
        cur[k] = v.strip()
    if cur:
        recs.append(cur)
    return recs


def norm_key(s):
    """Key for exact-duplicate detection: case, punctuation and digits ignored."""
    s = re.sub(r"[0-9]+", "", s.lower())
    return " ".join(re.findall(r"[a-z]+", s))


EXCLUDE_DESC = re.compile(
    r"transitional|dummy|metapackage|meta-package|virtual package|obsolete|"
    r"debug(ging)? symbols|\bdbgsym\b", re.I)


def section_of(rec):
    return rec.get("Section", "").split("/")[-1]


def source_of(rec):
    src = rec.get("Source", "") or rec.get("Package", "")
    return src.split()[0]


def desc_ok(pkg, desc):
    """Selection rules for one description, and the reason it was dropped."""
    if EXCLUDE_DESC.search(desc):
        return "transitional/dummy/meta"
    if len(desc) < 15 or len(desc.split()) < 3:
        return "too short"
    if len(desc) > 200:
        return "too long"
    if re.search(r"(?<![a-z0-9])" + re.escape(pkg.lower()) + r"(?![a-z0-9])", desc.lower()):
        return "names the package"
    return None


def build_debian_section(out_dir, allow_change, prov):
    raw_lz4 = open(PACKAGES_LZ4, "rb").read()
    lz4 = shutil.which("lz4")
    if not lz4:
        sys.exit("error: the lz4 command (Debian package lz4) is needed to read " + PACKAGES_LZ4)
    p = subprocess.run([lz4, "-dc", PACKAGES_LZ4], stdout=subprocess.PIPE, check=True)
    data = p.stdout
    packages_sha = sha256_bytes(data)
    check_expected(PACKAGES_LZ4 + " (decompressed)", packages_sha, EXPECTED_PACKAGES_SHA256, allow_change)

    # The decompressed index against the signed Release file (InRelease).
    inrel = open(INRELEASE, encoding="utf-8", errors="replace").read()
    inrel_fields = {}
    for line in inrel.splitlines():
        m = re.match(r"^(Origin|Suite|Version|Codename|Date): (.*)$", line)
        if m and m.group(1) not in inrel_fields:
            inrel_fields[m.group(1)] = m.group(2)
    sha_section = inrel.split("\nSHA256:\n", 1)[1] if "\nSHA256:\n" in inrel else ""
    listed = None
    for line in sha_section.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == INRELEASE_ENTRY:
            listed = parts[0]
            break
        if line and not line.startswith(" "):
            break
    gpgv = shutil.which("gpgv")
    sig = None
    if gpgv and os.path.exists(ARCHIVE_KEYRING):
        r = subprocess.run([gpgv, "--keyring", ARCHIVE_KEYRING, INRELEASE],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=dict(os.environ, LC_ALL="C"))
        good = re.findall(r'Good signature from "([^"]*)"', r.stderr.decode("utf-8", "replace"))
        sig = ("good signature from " + "; ".join(good)) if r.returncode == 0 and good else "NOT verified"

    recs = parse_deb822(data.decode("utf-8"))
    prov["debian-section"] = {
        "packages_lz4": PACKAGES_LZ4,
        "packages_lz4_sha256": sha256_bytes(raw_lz4),
        "packages_sha256": packages_sha,
        "packages_size": len(data),
        "inrelease": INRELEASE,
        "inrelease_fields": inrel_fields,
        "inrelease_listed_sha256": listed,
        "inrelease_match": listed == packages_sha,
        "inrelease_signature": sig,
        "lz4_version": dpkg_version("lz4"),
        "apt_version": dpkg_version("apt"),
        "gpgv_version": dpkg_version("gpgv"),
        "keyring_version": dpkg_version("debian-archive-keyring"),
        "n_stanzas": len(recs),
    }

    # Descriptions that occur (after normalisation) under more than one
    # section anywhere in the archive are ambiguous: drop them everywhere.
    key_sections = collections.defaultdict(set)
    for r in recs:
        if "Description" in r:
            key_sections[norm_key(r["Description"])].add(section_of(r))

    section_counts = collections.Counter(section_of(r) for r in recs)
    drops = collections.Counter()
    pools = {s: [] for s in SECTIONS}
    seen_keys = set()
    for r in sorted(recs, key=lambda r: r.get("Package", "")):
        sec = section_of(r)
        if sec not in pools:
            continue
        pkg, desc = r.get("Package", ""), r.get("Description", "").strip()
        why = desc_ok(pkg, desc)
        if why is None and len(key_sections[norm_key(desc)]) > 1:
            why = "same description in another section"
        if why is None and norm_key(desc) in seen_keys:
            why = "duplicate description"
        if why:
            drops[why] += 1
            continue
        seen_keys.add(norm_key(desc))
        pools[sec].append((pkg, source_of(r), desc))

    rng = random.Random(SEED)
    labels = list(SECTIONS)
    rng.shuffle(labels)
    extra = N_TRAIN - (N_TRAIN // len(SECTIONS)) * len(SECTIONS)  # 4
    n_train = {s: N_TRAIN // len(SECTIONS) + (1 if i < extra else 0) for i, s in enumerate(labels)}

    picked_desc = []  # every description already chosen, all labels
    train, test = [], []
    near_dup_skips = 0
    source_skips = 0
    for sec in SECTIONS:
        pool = list(pools[sec])
        rng.shuffle(pool)
        need = n_train[sec] + SECTION_TEST_PER_LABEL
        chosen, sources = [], set()
        for pkg, src, desc in pool:
            if len(chosen) == need:
                break
            if src in sources:
                source_skips += 1
                continue
            low = desc.lower()
            if any(difflib.SequenceMatcher(None, low, d).ratio() >= 0.8 for d in picked_desc):
                near_dup_skips += 1
                continue
            chosen.append((desc, sec, pkg))
            sources.add(src)
            picked_desc.append(low)
        if len(chosen) < need:
            sys.exit("error: section %s has only %d usable descriptions" % (sec, len(chosen)))
        train += chosen[:n_train[sec]]
        test += chosen[n_train[sec]:]
    rng.shuffle(train)
    rng.shuffle(test)

    assert len(train) == N_TRAIN and len(test) == N_TEST
    assert not ({d for d, _, _ in train} & {d for d, _, _ in test})
    assert not ({norm_key(d) for d, _, _ in train} & {norm_key(d) for d, _, _ in test})

    d = os.path.join(out_dir, "debian-section")
    os.makedirs(d, exist_ok=True)
    write_jsonl(os.path.join(d, "train.jsonl"), [(SECTION_INSTRUCTION, x, y) for x, y, _ in train])
    write_jsonl(os.path.join(d, "test.jsonl"), [(SECTION_INSTRUCTION, x, y) for x, y, _ in test])

    test_counts = collections.Counter(y for _, y, _ in test)
    majority = max(test_counts.values())
    prov["debian-section"].update({
        "section_counts": {s: section_counts[s] for s in SECTIONS},
        "pool_sizes": {s: len(pools[s]) for s in SECTIONS},
        "drops": dict(sorted(drops.items())),
        "near_dup_skips": near_dup_skips,
        "source_skips": source_skips,
        "train_counts": dict(sorted(collections.Counter(y for _, y, _ in train).items())),
        "test_counts": dict(sorted(test_counts.items())),
        "majority_baseline": 100.0 * majority / len(test),
        "train_packages": sorted(p for _, _, p in train),
        "test_packages": sorted(p for _, _, p in test),
    })
    return train, test


# ----------------------------------------------------------------------------
# Task 2: ko-ui-strings.


def read_mo(path):
    """Entries (msgctxt|None, msgid bytes, msgstr bytes) of a GNU .mo file, and its charset."""
    b = open(path, "rb").read()
    magic = struct.unpack("<I", b[:4])[0]
    if magic == 0x950412DE:
        e = "<"
    elif magic == 0xDE120495:
        e = ">"
    else:
        raise ValueError("not a .mo file: " + path)
    _rev, n, o, t = struct.unpack(e + "4I", b[4:20])
    entries = []
    for i in range(n):
        l1, a1 = struct.unpack(e + "2I", b[o + 8 * i:o + 8 * i + 8])
        l2, a2 = struct.unpack(e + "2I", b[t + 8 * i:t + 8 * i + 8])
        entries.append((b[a1:a1 + l1], b[a2:a2 + l2]))
    charset = "utf-8"
    for mid, mstr in entries:
        if mid == b"":
            m = re.search(rb"charset=([A-Za-z0-9_.:-]+)", mstr)
            if m:
                charset = m.group(1).decode("ascii")
    out = []
    for mid, mstr in entries:
        ctx = None
        if b"\x04" in mid:
            ctx, mid = mid.split(b"\x04", 1)
        out.append((ctx, mid, mstr))
    return out, charset


HANGUL = re.compile("[\uac00-\ud7a3]")
FORMAT = re.compile(r"%|\{[^}]*\}|\$\{?\w|\\")


def basic_filter(ctx, mid, mstr, charset):
    """The brief's rules: short, one line, no format/mnemonic/plural, Hangul, not identical."""
    if mid == b"":
        return "header", None
    if b"\x00" in mid or b"\x00" in mstr:
        return "plural", None
    if ctx is not None:
        return "msgctxt", None
    try:
        en, ko = mid.decode(charset), mstr.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return "undecodable", None
    if not ko.strip():
        return "untranslated", None
    if "\n" in en or "\n" in ko or "\t" in en or "\t" in ko:
        return "newline/tab", None
    if FORMAT.search(en) or FORMAT.search(ko):
        return "format specifier", None
    if "_" in en or "&" in en or "_" in ko or "&" in ko:
        return "mnemonic", None
    if len(en) > 40 or not (1 <= len(en.split()) <= 5):
        return "long", None
    if en != en.strip() or ko != ko.strip():
        return "edge whitespace", None
    if not HANGUL.search(ko):
        return "no Hangul", None
    if ko == en:
        return "identical", None
    return None, (en, ko)


def latin_runs(s):
    return re.findall(r"[A-Za-z0-9]+", s)


def in_korean(run_, ko):
    return re.search(r"(?<![A-Za-z0-9])" + re.escape(run_) + r"(?![A-Za-z0-9])", ko) is not None


def hangul_tokens(ko):
    return [t for t in re.split(r"[\s()\[\],/\u00b7:;-]+", ko) if HANGUL.search(t)]


def lowercase_words(en):
    return [w for w in latin_runs(en) if not re.search("[A-Z0-9]", w)]


def renderings(pairs):
    """For each lowercase English word, the Hangul tokens that render it:
    tokens seen with the word in >= 2 pairs and in >= 20% of the word's pairs,
    or with >= 50% of the token's pairs containing the word."""
    nw, nh, both = collections.Counter(), collections.Counter(), collections.Counter()
    for en, ko in pairs:
        ws, hs = set(lowercase_words(en)), set(hangul_tokens(ko))
        nw.update(ws)
        nh.update(hs)
        for w in ws:
            for h in hs:
                both[w, h] += 1
    rend = collections.defaultdict(set)
    for (w, h), c in sorted(both.items()):
        if c >= 2 and (c / nw[w] >= 0.2 or c / nh[h] >= 0.5):
            rend[w].add(h)
    return rend


def catalog_stats():
    paths = sorted(os.path.join(KO_LOCALE_DIR, f) for f in os.listdir(KO_LOCALE_DIR) if f.endswith(".mo"))
    for d in VIM_LANG_GLOB_DIRS:
        if os.path.isdir(d):
            paths += sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".mo"))
    rows = []
    for p in paths:
        entries, charset = read_mo(p)
        c = collections.Counter()
        for ctx, mid, mstr in entries:
            why, _ = basic_filter(ctx, mid, mstr, charset)
            c[why or "clean"] += 1
        rows.append((p, len(entries), c["clean"], charset))
    return rows


def build_ko_ui_strings(out_dir, allow_change, prov):
    stats = catalog_stats()
    print("Korean catalogs: entries, pairs passing the basic filters (short, one line, "
          "no format/mnemonic/plural, Hangul, not identical):")
    for p, n, clean, cs in sorted(stats, key=lambda r: (-r[2], r[0])):
        print("  %5d %5d  %s  [%s]" % (n, clean, p, cs))

    sha = sha256_file(KO_CATALOG)
    check_expected(KO_CATALOG, sha, EXPECTED_KO_CATALOG_SHA256, allow_change)
    pkg, ver = dpkg_owner(KO_CATALOG)
    entries, charset = read_mo(KO_CATALOG)
    header = ""
    for ctx, mid, mstr in entries:
        if mid == b"":
            header = mstr.decode(charset, "replace")

    drops = collections.Counter()
    basic = []
    for ctx, mid, mstr in entries:
        why, pair = basic_filter(ctx, mid, mstr, charset)
        if why:
            drops[why] += 1
        else:
            basic.append(pair)

    # Recoverability.  Every Latin run of the English that has a capital or a
    # digit (names, acronyms: "PDF", "OpenOffice", "X11") must appear verbatim
    # in the Korean, so brand names the translation transliterates
    # ("퀵타임" = QuickTime) or re-cases ("TAR" for "Tar") are out; every
    # lowercase English word must be a pattern word used by >= 3 basic pairs
    # of the catalog ("document", "image", "archive"), so its Korean rendering
    # is learnable; the Korean may hold no Latin run the English lacks; and
    # the words must line up: every lowercase English word is rendered in the
    # Korean (by a Hangul token that renders it elsewhere in the catalog, or
    # verbatim), and every Hangul token renders one of the English words, so
    # "CD 이미지" -> "raw CD image" (nothing for "raw") and
    # "OpenOffice Calc 스프레드시트 문서 서식" -> "OpenOffice Calc template"
    # (nothing for "스프레드시트") are out.
    word_freq = collections.Counter(w for en, _ in basic for w in set(lowercase_words(en)))
    rend = renderings(basic)
    recoverable = []
    for en, ko in basic:
        runs_ = latin_runs(en)
        upper = [w for w in runs_ if re.search("[A-Z0-9]", w)]
        lower = [w for w in runs_ if w not in upper]
        if any(not in_korean(w, ko) for w in upper):
            drops["name not kept verbatim in Korean"] += 1
        elif any(word_freq[w] < 3 for w in lower):
            drops["rare lowercase word (< 3 uses)"] += 1
        elif any(w not in runs_ for w in latin_runs(ko)):
            drops["Korean has Latin text the English lacks"] += 1
        elif any(not (in_korean(w, ko) or rend[w] & set(hangul_tokens(ko))) for w in lower):
            drops["English word not rendered in Korean"] += 1
        elif any(not any(h in rend[w] for w in lower) for h in hangul_tokens(ko)):
            drops["Korean word renders no English word"] += 1
        else:
            recoverable.append((en, ko))

    # Distinct pairs: a Korean string with several English sources is
    # ambiguous (all dropped); an English string with several Korean
    # renderings keeps the first in sort order.
    by_ko = collections.defaultdict(set)
    for en, ko in recoverable:
        by_ko[ko].add(en)
    pairs, seen_en = [], set()
    for en, ko in sorted(set(recoverable)):
        if len(by_ko[ko]) > 1:
            drops["ambiguous Korean"] += 1
            continue
        if en in seen_en:
            drops["duplicate English"] += 1
            continue
        seen_en.add(en)
        pairs.append((en, ko))

    rng = random.Random(SEED)
    rng.shuffle(pairs)
    if len(pairs) < N_TRAIN + N_TEST:
        sys.exit("error: only %d usable pairs" % len(pairs))
    train, test = pairs[:N_TRAIN], pairs[N_TRAIN:N_TRAIN + N_TEST]
    assert not ({k for _, k in train} & {k for _, k in test})

    d = os.path.join(out_dir, "ko-ui-strings")
    os.makedirs(d, exist_ok=True)
    write_jsonl(os.path.join(d, "train.jsonl"), [(KO_INSTRUCTION, ko, en) for en, ko in train])
    write_jsonl(os.path.join(d, "test.jsonl"), [(KO_INSTRUCTION, ko, en) for en, ko in test])

    def head_noun(en):
        return en.split()[-1].strip("()")

    prov["ko-ui-strings"] = {
        "catalog": KO_CATALOG,
        "sha256": sha,
        "package": pkg,
        "version": ver,
        "md5_matches_dpkg": dpkg_md5_matches(pkg, KO_CATALOG) if pkg else None,
        "header": header,
        "entries": len(entries),
        "basic": len(basic),
        "recoverable": len(recoverable),
        "distinct": len(pairs),
        "drops": dict(sorted(drops.items())),
        "stats": stats,
        "test_last_words": collections.Counter(head_noun(en) for en, _ in test).most_common(8),
    }
    return train, test


# ----------------------------------------------------------------------------
# README.


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(out)


def readme(prov):
    s = prov["debian-section"]
    k = prov["ko-ui-strings"]
    owner_status = dpkg_owner(DPKG_STATUS)[0]
    n_status = 0
    if os.path.exists(DPKG_STATUS):
        n_status = sum(1 for r in parse_deb822(open(DPKG_STATUS, encoding="utf-8", errors="replace").read())
                       if r.get("Package"))
    L = []
    a = L.append
    a("# Tuning tasks")
    a("")
    a("Two small supervised tasks for comparing zero-shot prompting, in-context")
    a("few-shot prompting and LoRA fine-tuning of a small model (Gemma 3 270M).")
    a("The data was written by Debian maintainers and translators, not by this")
    a("project; it is taken from files the build machine's Debian 12 (bookworm)")
    a("system holds.")
    a("")
    a("This file and every `*.jsonl` beside it are generated by")
    a("`scripts/make-tune-tasks.py` (Python 3 standard library plus the `lz4`,")
    a("`dpkg-query` and, for the signature check, `gpgv` commands; no network).")
    a("Running it twice gives byte-identical output. It stops if a source file's")
    a("hash differs from the one recorded below, unless `--allow-source-change`.")
    a("")
    a("| task | language | train | test | answer |")
    a("|---|---|---|---|---|")
    a("| `debian-section` | English | %d | %d | one of %d section names |" % (N_TRAIN, N_TEST, len(SECTIONS)))
    a("| `ko-ui-strings` | Korean -> English | %d | %d | free text (an English UI string) |" % (N_TRAIN, N_TEST))
    a("")
    a("## Format")
    a("")
    a("One JSON object per line, OpenAI chat form:")
    a("")
    a("```")
    a('{"messages": [{"role": "user", "content": "<instruction>\\n\\n<input>"}, '
      '{"role": "assistant", "content": "<answer>"}]}')
    a("```")
    a("")
    a("The instruction is the same for every example of a task and names what a")
    a("valid answer is, so the zero-shot question is answerable in principle.")
    a("Korean is stored as UTF-8, not `\\u` escapes.")
    a("")
    a("## Metric (fixed before any training)")
    a("")
    a("Exact match: the generated answer with leading and trailing whitespace")
    a("stripped must equal the reference answer (also stripped), compared")
    a("case-sensitively, character for character. Reported as the percentage of")
    a("the %d held-out `test.jsonl` examples answered correctly. Few-shot prompts" % N_TEST)
    a("draw their examples from `train.jsonl` only; LoRA trains on `train.jsonl`")
    a("only; nothing is tuned on `test.jsonl`.")
    a("")
    a("## Split")
    a("")
    a("Seed `%d`; Python's `random.Random(%d)`, one generator per task (made with" % (SEED, SEED))
    a("Python %d.%d; integer seeding and `shuffle` are not expected to differ in" % sys.version_info[:2])
    a("other Python 3 versions, but only this one was run).")
    a("Candidates are sorted before shuffling, so the file order of the sources")
    a("does not matter. No input occurs in both train and test (checked by the")
    a("script, for `debian-section` also after normalisation).")
    a("")
    a("## Task `debian-section`")
    a("")
    a("Input: a package's short description (the text after `Description:` on its")
    a("first line). Answer: the package's Debian archive section.")
    a("")
    a("Instruction:")
    a("")
    a("> " + SECTION_INSTRUCTION)
    a("")
    a("### Provenance")
    a("")
    f = s["inrelease_fields"]
    a("- Source file: `%s`, the bookworm `main` binary-amd64 package index (it" % s["packages_lz4"])
    a("  also lists `Architecture: all` packages) that apt downloaded from")
    a("  deb.debian.org. It is not shipped by a Debian package (`dpkg -S` finds no")
    a("  owner); it is pinned by hash and by the signed Release file instead.")
    a("  - sha256 of the `.lz4` file: `%s`" % s["packages_lz4_sha256"])
    a("  - sha256 of the decompressed index (%d bytes, %d stanzas): `%s`" % (s["packages_size"], s["n_stanzas"], s["packages_sha256"]))
    a("  - `%s` lists `%s` with sha256 `%s`: %s." % (
        s["inrelease"], INRELEASE_ENTRY, s["inrelease_listed_sha256"],
        "matches" if s["inrelease_match"] else "DOES NOT MATCH"))
    a("  - Release: Origin %s, Suite %s, Codename %s, Version %s, Date %s." % (
        f.get("Origin"), f.get("Suite"), f.get("Codename"), f.get("Version"), f.get("Date")))
    a("  - InRelease signature (`gpgv` %s, keyring `%s` from debian-archive-keyring %s): %s." % (
        s["gpgv_version"], ARCHIVE_KEYRING, s["keyring_version"], s["inrelease_signature"]))
    a("  - Decompressed with `lz4 -dc` from Debian package lz4 %s (the index was" % s["lz4_version"])
    a("    fetched by apt %s)." % s["apt_version"])
    a("- License: the index is Debian archive metadata. Each description is part of")
    a("  its source package's `debian/control`, written by that package's Debian")
    a("  maintainers and distributed under the terms in that package's")
    a("  `debian/copyright`; every package here is in `main`, so those terms are")
    a("  DFSG-free. The index as a whole carries no single license.")
    a("- `%s` (%d installed packages%s) was considered and not used:" % (
        DPKG_STATUS, n_status, "" if not owner_status else ", owner " + owner_status))
    a("  it is a small, library-heavy subset of the archive, and only it has long")
    a("  descriptions, so mixing it in would give inputs of two kinds. The archive")
    a("  index carries no long descriptions (`Description-md5` only; no")
    a("  `Translation-en` list is on this machine), so every input is the short")
    a("  description alone.")
    a("")
    a("### Selection")
    a("")
    a("Labels: %s. Packages per section in the index: %s." % (
        ", ".join("`%s`" % x for x in SECTIONS),
        ", ".join("%s %d" % (x, s["section_counts"][x]) for x in SECTIONS)))
    a("They were chosen among the common sections because their short descriptions")
    a("usually signal the section (documentation, font, game, Perl module, Python")
    a("module, audio/music software) while leaving real ambiguity (a Perl module's")
    a("description often does not say \"Perl\"; a game's data package or an audio")
    a("tool may not say \"game\" or \"audio\"). Left out: `libs`/`libdevel`/`devel`")
    a("(runtime vs development split mostly invisible in one line), `utils`, `net`,")
    a("`admin`, `misc` (broad and overlapping), language sections whose")
    a("descriptions are one template (`rust`, `golang`, `haskell`).")
    a("")
    a("Rules, in order (a `contrib/` or `non-free/` prefix would be stripped from")
    a("the section; `main` has none):")
    a("")
    a("1. Drop descriptions matching `transitional`, `dummy`, `metapackage`,")
    a("   `virtual package`, `obsolete`, `debug symbols`.")
    a("2. Keep 15-200 characters and at least 3 words.")
    a("3. Drop a description that contains the package's own name (as a word,")
    a("   case-insensitive). No package name is part of any input.")
    a("4. Normalise (lowercase, digits removed, punctuation to spaces): drop a")
    a("   description whose normal form occurs under more than one section anywhere")
    a("   in the archive, and keep only the first (by package name) of identical")
    a("   normal forms.")
    a("5. Per label, shuffle the pool and take descriptions in that order, skipping")
    a("   a second package of the same source package and any description with a")
    a("   `difflib` similarity ratio >= 0.8 (lowercased) to one already taken for any")
    a("   label, until the label has its train share plus %d test examples." % SECTION_TEST_PER_LABEL)
    a("6. Balanced split: %d test examples per label; the %d train examples are" % (SECTION_TEST_PER_LABEL, N_TRAIN))
    a("   10 or 11 per label (which four labels get 11 is drawn with the seed).")
    a("   Each file is then shuffled.")
    a("")
    a("Pool after rules 1-4: %s. Dropped: %s. Skipped in rule 5: %d same-source, %d near-duplicate." % (
        ", ".join("%s %d" % (x, s["pool_sizes"][x]) for x in SECTIONS),
        ", ".join("%s %d" % kv for kv in s["drops"].items()),
        s["source_skips"], s["near_dup_skips"]))
    a("")
    a(md_table(["label", "train", "test"],
               [("`%s`" % x, s["train_counts"].get(x, 0), s["test_counts"].get(x, 0)) for x in SECTIONS]))
    a("")
    a("Trivial baseline (always the most frequent test label): %.1f%%." % s["majority_baseline"])
    a("")
    a("## Task `ko-ui-strings`")
    a("")
    a("Input: a Korean string from a gettext catalog (the `msgstr`). Answer: the")
    a("English source string it translates (the `msgid`).")
    a("")
    a("Instruction:")
    a("")
    a("> " + KO_INSTRUCTION)
    a("")
    a("### Provenance")
    a("")
    a("- Source file: `%s`, shipped by Debian package `%s` version `%s`" % (k["catalog"], k["package"], k["version"]))
    a("  (`dpkg -S`, `dpkg-query -W`); md5 equal to the one dpkg recorded at")
    a("  install: %s." % {True: "yes", False: "NO", None: "unknown"}[k["md5_matches_dpkg"]])
    a("  - sha256: `%s`" % k["sha256"])
    hdr = dict(line.split(": ", 1) for line in k["header"].splitlines() if ": " in line)
    a("  - Catalog header: Project-Id-Version `%s`, Last-Translator `%s`, Language-Team `%s`." % (
        hdr.get("Project-Id-Version", ""), hdr.get("Last-Translator", ""), hdr.get("Language-Team", "")))
    a("- Content: the MIME type descriptions of the freedesktop.org shared MIME-info")
    a("  database (English) and their Korean translations.")
    a("- License: shared-mime-info is GPL-2.0-or-later")
    a("  (`/usr/share/doc/%s/copyright`); its translations are distributed with it" % k["package"])
    a("  under the same terms.")
    a("")
    a("### Selection")
    a("")
    a("Candidate catalogs: every `.mo` under `%s` plus vim's Korean catalogs." % KO_LOCALE_DIR)
    a("Basic filters (the same for every catalog): no header, no plural forms, no")
    a("`msgctxt`, decodable in the catalog's charset, translated, no newline or tab,")
    a("no format specifier or escape (`%`, `{...}`, `$`, `\\`), no mnemonic marker")
    a("(`_`, `&`), English 1-5 words and <= 40 characters, no edge whitespace,")
    a("Korean contains Hangul, Korean != English. Catalogs with the most pairs")
    a("passing them (entries / passing):")
    a("")
    top = sorted(k["stats"], key=lambda r: (-r[2], r[0]))[:12]
    a(md_table(["catalog", "entries", "passing"], [("`%s`" % p, n, c) for p, n, c, _ in top]))
    a("")
    a("shared-mime-info alone is enough and is used alone: its strings follow")
    a("learnable patterns (\"PDF 문서\" -> \"PDF document\"). The other large")
    a("catalogs (git, gtk20-properties, xkeyboard-config, libc, postgres, vim,")
    a("iso_639, iso_3166) hold free-form program messages, widget property")
    a("blurbs, keyboard layout, language and country names, whose English is much")
    a("less recoverable from the Korean (names are transliterated, wording varies).")
    a("")
    a("Recoverability rules on top of the basic filters:")
    a("")
    a("1. Every Latin/digit run of the English containing a capital or a digit")
    a("   (names, acronyms: `PDF`, `OpenOffice`, `X11`) appears verbatim in the")
    a("   Korean. This removes brand names the translation transliterates")
    a("   (\"퀵타임 동영상\" for \"QuickTime video\") or re-cases (\"TAR\" for \"Tar\").")
    a("2. Every lowercase English word is used by at least 3 pairs that pass the")
    a("   basic filters (pattern words such as `document`, `image`, `archive`).")
    a("3. The Korean contains no Latin/digit run the English lacks.")
    a("4. The words line up. A Hangul token (split at spaces and punctuation)")
    a("   renders a lowercase English word when, over the pairs passing the basic")
    a("   filters, they occur together in >= 2 pairs and in >= 20% of the word's")
    a("   pairs or >= 50% of the token's pairs. Each lowercase English word must be")
    a("   rendered by a token of the Korean (or appear in it verbatim), and each")
    a("   Hangul token must render one of the English words. This removes")
    a("   \"CD 이미지\" -> \"raw CD image\" and \"OpenOffice Calc 스프레드시트 문서 서식\"")
    a("   -> \"OpenOffice Calc template\".")
    a("5. A Korean string with more than one English source is dropped; an")
    a("   English string with several Korean renderings keeps the first by sort.")
    a("")
    a("Entries: %d; passing basic filters: %d; recoverable: %d; distinct pairs: %d" % (
        k["entries"], k["basic"], k["recoverable"], k["distinct"]))
    a("(of which %d are used). Dropped: %s." % (
        N_TRAIN + N_TEST, ", ".join("%s %d" % kv for kv in k["drops"].items())))
    a("Split: the distinct pairs are sorted, shuffled with the seed; the first %d" % N_TRAIN)
    a("are train, the next %d test." % N_TEST)
    a("")
    a("Most frequent last English words in test: %s." % ", ".join(
        "`%s` %d" % kv for kv in k["test_last_words"]))
    a("")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "tasks"))
    ap.add_argument("--allow-source-change", action="store_true")
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)
    prov = {}
    tr1, te1 = build_debian_section(out, args.allow_source_change, prov)
    tr2, te2 = build_ko_ui_strings(out, args.allow_source_change, prov)
    text = readme(prov)
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    s, k = prov["debian-section"], prov["ko-ui-strings"]
    print()
    print("debian-section: %d train, %d test; test labels %s; majority baseline %.1f%%" % (
        len(tr1), len(te1), s["test_counts"], s["majority_baseline"]))
    print("  source %s (sha256 of decompressed %s, InRelease match %s)" % (
        s["packages_lz4"], s["packages_sha256"], s["inrelease_match"]))
    print("ko-ui-strings: %d train, %d test from %d distinct pairs" % (len(tr2), len(te2), k["distinct"]))
    print("  source %s from %s %s (sha256 %s)" % (k["catalog"], k["package"], k["version"], k["sha256"]))
    print("wrote %s/{debian-section,ko-ui-strings}/{train,test}.jsonl and README.md" % out)


if __name__ == "__main__":
    main()
