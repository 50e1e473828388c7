#!/usr/bin/env python3
"""gen_fhir.py - generate the FHIR R4 model tables (src/fhir/model_gen.[ch]) from the official
definitions package (node_modules/hl7.fhir.r4.examples, installed by `npm ci`).

    python3 tools/gen_fhir.py           writes src/fhir/model_gen.c and src/fhir/model_gen.h
    python3 tools/gen_fhir.py --check   regenerates in memory, exits 1 if the committed files differ

Standard library only. The output is deterministic: every table is sorted and no timestamps or
absolute paths are written. See docs/internals/fhir.md for what the tables hold.
"""

import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "node_modules", "hl7.fhir.r4.examples")
OUT_C = os.path.join(ROOT, "src", "fhir", "model_gen.c")
OUT_H = os.path.join(ROOT, "src", "fhir", "model_gen.h")

SD_BASE = "http://hl7.org/fhir/StructureDefinition/"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"

NONE16 = 0xFFFF
UNBOUNDED = 0xFFFF

# JSON representation of each primitive type (enum jk_fhir_json in model.h).
JSON_OBJECT, JSON_STRING, JSON_BOOL, JSON_INT, JSON_UINT, JSON_PINT, JSON_DECIMAL, JSON_XHTML = range(8)
PRIM_JSON = {
    "boolean": JSON_BOOL,
    "integer": JSON_INT,
    "unsignedInt": JSON_UINT,
    "positiveInt": JSON_PINT,
    "decimal": JSON_DECIMAL,
    "xhtml": JSON_XHTML,
}
# Primitives whose JSON value is not a string are checked by JSON type and range; json-c prints
# integers and booleans canonically, so their regex adds nothing. Decimals keep their source
# text and are matched against the decimal regex.
REGEX_SKIP = {"boolean", "integer", "unsignedInt", "positiveInt"}

KIND_PRIMITIVE, KIND_COMPLEX, KIND_RESOURCE = 1, 2, 3

# Element flags (JK_FHIR_EF_* in model.h).
EF_CHOICE = 1  # a variant of a choice element value[x]
EF_SUMMARY = 2  # isSummary
EF_MODIFIER = 4  # isModifier


class GenError(Exception):
    pass


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# Regex translation: the StructureDefinitions carry XML Schema regular expressions; POSIX ERE
# has no \s \S \d shorthands and treats a backslash inside brackets literally.

WS = " \t\n\r"  # XML Schema \s is exactly these four characters


def _bracket(items, negated):
    """A POSIX bracket expression for a set of literal characters and ranges."""
    lits = []
    ranges = []
    for it in items:
        if len(it) == 1:
            if it not in lits:
                lits.append(it)
        else:
            ranges.append(it)
    has_close = "]" in lits
    has_dash = "-" in lits
    has_caret = "^" in lits
    body = [c for c in lits if c not in "]-^"]
    out = "[" + ("^" if negated else "")
    if has_close:
        out += "]"
    out += "".join(ranges) + "".join(body)
    if has_caret:
        if out.endswith("[") or out.endswith("[^"):
            if not body and not ranges and not has_close:
                raise GenError("cannot express a bracket holding only '^'")
        out += "^"
    if has_dash:
        out += "-"
    return out + "]"


def translate_regex(rx):
    """Translates an XML Schema regex from a StructureDefinition to an anchored POSIX ERE."""
    out = []
    i = 0
    n = len(rx)
    while i < n:
        c = rx[i]
        if c == "\\":
            if i + 1 >= n:
                raise GenError("trailing backslash in %r" % rx)
            e = rx[i + 1]
            i += 2
            if e == "s":
                out.append(_bracket(list(WS), False))
            elif e == "S":
                out.append(_bracket(list(WS), True))
            elif e == "d":
                out.append("[0-9]")
            elif e == "D":
                out.append("[^0-9]")
            elif e in ".+*?()[]{}|^$\\":
                out.append("\\" + e)
            elif e in "-/:":
                out.append(e)
            elif e == "t":
                out.append("\t")
            elif e == "n":
                out.append("\n")
            elif e == "r":
                out.append("\r")
            else:
                raise GenError("unsupported escape \\%s in %r" % (e, rx))
        elif c == "[":
            i += 1
            negated = False
            if i < n and rx[i] == "^":
                negated = True
                i += 1
            items = []
            not_space = False
            first = True
            while i < n and (rx[i] != "]" or first):
                first = False
                ch = rx[i]
                if ch == "\\":
                    e = rx[i + 1]
                    i += 2
                    if e == "s":
                        items.extend(WS)
                    elif e == "S":
                        not_space = True
                    elif e == "d":
                        items.append("0-9")
                    elif e == "t":
                        items.append("\t")
                    elif e == "n":
                        items.append("\n")
                    elif e == "r":
                        items.append("\r")
                    elif e in "-.+*?()[]{}|^$/\\=:":
                        items.append(e)
                    else:
                        raise GenError("unsupported escape \\%s in brackets of %r" % (e, rx))
                    continue
                if i + 2 < n and rx[i + 1] == "-" and rx[i + 2] != "]":
                    hi = rx[i + 2]
                    if hi == "\\":
                        raise GenError("escaped range end in %r" % rx)
                    items.append(ch + "-" + hi)
                    i += 3
                    continue
                items.append(ch)
                i += 1
            if i >= n:
                raise GenError("unterminated bracket in %r" % rx)
            i += 1  # the closing ]
            if not_space:
                if negated:
                    raise GenError("negated bracket with \\S in %r" % rx)
                alt = _bracket(list(WS), True)
                out.append("(%s|%s)" % (_bracket(items, False), alt) if items else alt)
            else:
                out.append(_bracket(items, negated))
        else:
            out.append(c)
            i += 1
    return "^(" + "".join(out) + ")$"


# ---------------------------------------------------------------------------------------------
# DFA compilation: each translated regex is also compiled here into a byte-level DFA, so the
# validator matches without regexec (glibc serialises regexec on one regex_t with a lock and
# allocates on every call). The unit tests check the DFAs against regcomp/regexec.

ALL_BYTES = (1 << 256) - 2  # every byte but NUL (C strings cannot hold it)


def _bitset(chars):
    m = 0
    for ch in chars:
        m |= 1 << ch
    return m


class _EreParser:
    """Parses the ERE subset translate_regex produces into a small AST."""

    def __init__(self, text):
        if not (text.startswith("^(") and text.endswith(")$")):
            raise GenError("regex %r is not anchored" % text)
        self.s = text.encode("utf-8")[1:-1]
        self.i = 0

    def parse(self):
        node = self.alt()
        if self.i != len(self.s):
            raise GenError("unexpected %r in regex" % chr(self.s[self.i]))
        return node

    def peek(self):
        return self.s[self.i] if self.i < len(self.s) else None

    def alt(self):
        branches = [self.seq()]
        while self.peek() == ord("|"):
            self.i += 1
            branches.append(self.seq())
        return ("alt", branches) if len(branches) > 1 else branches[0]

    def seq(self):
        items = []
        while self.peek() is not None and self.peek() not in b"|)":
            atom = self.atom()
            while self.peek() is not None and self.peek() in b"*+?{":
                atom = self.quant(atom)
            items.append(atom)
        return ("seq", items)

    def quant(self, atom):
        c = self.s[self.i]
        self.i += 1
        if c == ord("*"):
            return ("rep", atom, 0, None)
        if c == ord("+"):
            return ("rep", atom, 1, None)
        if c == ord("?"):
            return ("rep", atom, 0, 1)
        end = self.s.index(b"}", self.i)
        spec = self.s[self.i:end].decode()
        self.i = end + 1
        if "," in spec:
            lo, hi = spec.split(",")
            return ("rep", atom, int(lo), int(hi) if hi else None)
        return ("rep", atom, int(spec), int(spec))

    def atom(self):
        c = self.s[self.i]
        self.i += 1
        if c == ord("("):
            node = self.alt()
            if self.peek() != ord(")"):
                raise GenError("unbalanced ( in regex")
            self.i += 1
            return node
        if c == ord("["):
            return ("set", self.bracket())
        if c == ord("\\"):
            e = self.s[self.i]
            self.i += 1
            return ("set", 1 << e)
        if c == ord("."):
            return ("set", ALL_BYTES)
        if c in b"^$":
            raise GenError("anchor inside regex")
        return ("set", 1 << c)

    def bracket(self):
        negated = False
        if self.peek() == ord("^"):
            negated = True
            self.i += 1
        m = 0
        first = True
        while True:
            c = self.s[self.i]
            if c == ord("]") and not first:
                self.i += 1
                break
            first = False
            if c == ord("[") and self.s[self.i + 1] == ord(":"):
                raise GenError("character classes are not supported by the DFA compiler")
            if (self.i + 2 < len(self.s) and self.s[self.i + 1] == ord("-")
                    and self.s[self.i + 2] != ord("]")):
                lo, hi = c, self.s[self.i + 2]
                m |= _bitset(range(lo, hi + 1))
                self.i += 3
            else:
                m |= 1 << c
                self.i += 1
        return (ALL_BYTES & ~m) if negated else m


class _Nfa:
    def __init__(self):
        self.eps = []  # state -> list of states
        self.edges = []  # state -> list of (mask, state)

    def state(self):
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def build(self, node):
        """(start, end) fragment for node."""
        kind = node[0]
        if kind == "set":
            a, b = self.state(), self.state()
            self.edges[a].append((node[1], b))
            return a, b
        if kind == "seq":
            a = self.state()
            cur = a
            for item in node[1]:
                s, e = self.build(item)
                self.eps[cur].append(s)
                cur = e
            return a, cur
        if kind == "alt":
            a, b = self.state(), self.state()
            for br in node[1]:
                s, e = self.build(br)
                self.eps[a].append(s)
                self.eps[e].append(b)
            return a, b
        if kind == "rep":
            _, sub, lo, hi = node
            a = self.state()
            cur = a
            for _ in range(lo):
                s, e = self.build(sub)
                self.eps[cur].append(s)
                cur = e
            if hi is None:
                s, e = self.build(sub)
                self.eps[cur].append(s)
                self.eps[e].append(s)
                end = self.state()
                self.eps[cur].append(end)
                self.eps[e].append(end)
                return a, end
            end = self.state()
            self.eps[cur].append(end)
            for _ in range(hi - lo):
                s, e = self.build(sub)
                self.eps[cur].append(s)
                self.eps[e].append(end)
                cur = e
            return a, end
        raise GenError("bad regex node %r" % (kind,))

    def closure(self, states):
        out = set(states)
        stack = list(states)
        while stack:
            st = stack.pop()
            for n in self.eps[st]:
                if n not in out:
                    out.add(n)
                    stack.append(n)
        return frozenset(out)


def compile_dfa(ere):
    """A minimal DFA for an anchored ERE: (class_of_byte[256], n_classes, transitions as
    rows of next states, accepting flags, start). State 0 is the dead state."""
    nfa = _Nfa()
    start, accept = nfa.build(_EreParser(ere).parse())
    masks = sorted({m for row in nfa.edges for m, _ in row})
    # Byte classes: bytes that every edge treats alike.
    sig = {}
    class_of = [0] * 256
    for b in range(256):
        key = tuple((m >> b) & 1 for m in masks) if b else None
        if key not in sig:
            sig[key] = len(sig)
        class_of[b] = sig[key]
    n_classes = len(sig)
    rep = [None] * n_classes
    for b in range(256):
        if rep[class_of[b]] is None:
            rep[class_of[b]] = b
    # Subset construction; the empty set is the dead state.
    dead = frozenset()
    first = nfa.closure([start])
    ids = {dead: 0, first: 1}
    order = [dead, first]
    trans = []
    k = 0
    while k < len(order):
        cur = order[k]
        row = []
        for c in range(n_classes):
            b = rep[c]
            nxt = set()
            if b:
                for st in cur:
                    for m, t in nfa.edges[st]:
                        if (m >> b) & 1:
                            nxt.add(t)
            nxt = nfa.closure(nxt) if nxt else dead
            if nxt not in ids:
                ids[nxt] = len(order)
                order.append(nxt)
            row.append(ids[nxt])
        trans.append(row)
        k += 1
    acc = [accept in st for st in order]
    # Moore minimisation; the dead state keeps number 0, the start state comes next.
    part = [(1 if a else 0) for a in acc]
    while True:
        keys = {}
        new = []
        for i in range(len(order)):
            key = (part[i], tuple(part[t] for t in trans[i]))
            if key not in keys:
                keys[key] = len(keys)
            new.append(keys[key])
        if len(set(new)) == len(set(part)):
            part = new
            break
        part = new
    renum = {part[0]: 0}
    for i in range(len(order)):
        if part[i] not in renum:
            renum[part[i]] = len(renum)
    n_states = len(renum)
    rows = [None] * n_states
    accepting = [False] * n_states
    for i in range(len(order)):
        s2 = renum[part[i]]
        rows[s2] = [renum[part[t]] for t in trans[i]]
        accepting[s2] = acc[i]
    if any(rows[0][c] != 0 for c in range(n_classes)) or accepting[0]:
        raise GenError("dead state is not dead in %r" % ere)
    return class_of, n_classes, rows, accepting, renum[part[1]]


# ---------------------------------------------------------------------------------------------
# Loading the package


class Package:
    def __init__(self, folder):
        if not os.path.isdir(folder):
            raise GenError("%s is missing: run `npm ci` first" % folder)
        self.sds = {}
        self.vss = {}
        self.css = {}
        for path in sorted(glob.glob(os.path.join(folder, "StructureDefinition-*.json"))):
            d = load_json(path)
            self.sds[d["url"]] = d
        for path in sorted(glob.glob(os.path.join(folder, "ValueSet-*.json"))):
            d = load_json(path)
            self.vss.setdefault(d["url"], d)
        for path in sorted(glob.glob(os.path.join(folder, "CodeSystem-*.json"))):
            d = load_json(path)
            self.css.setdefault(d["url"], d)
        if not self.sds:
            raise GenError("no StructureDefinitions found in %s" % folder)


def base_types(pkg):
    """The R4 types: primitives, complex datatypes and resources (not profiles, not logical)."""
    out = {}
    for sd in pkg.sds.values():
        if sd.get("derivation") == "constraint":
            continue
        kind = sd.get("kind")
        if kind not in ("primitive-type", "complex-type", "resource"):
            continue
        if sd["url"] != SD_BASE + sd["id"]:
            continue
        out[sd["type"]] = sd
    return out


def type_code(t, path, is_resource_root):
    """The FHIR type of an ElementDefinition.type entry (System.String -> its fhir-type)."""
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        ft = None
        for x in t.get("extension", []):
            if x.get("url") == FHIR_TYPE_EXT:
                ft = x.get("valueUrl") or x.get("valueUri")
        if ft is None:
            raise GenError("%s: System type without fhir-type" % path)
        code = ft
        if is_resource_root and path.count(".") == 1 and path.endswith(".id"):
            code = "id"  # Resource.id is an id (R4 resource.html), not any string
    return code


# ---------------------------------------------------------------------------------------------
# Value sets


class ValueSets:
    def __init__(self, pkg):
        self.pkg = pkg
        self.cache = {}
        self.skipped = {}  # url -> reason

    def cs_codes(self, system):
        cs = self.pkg.css.get(system)
        if cs is None:
            return None, "code system %s is not in the package" % system
        if cs.get("content") != "complete":
            return None, "code system %s has content '%s'" % (system, cs.get("content"))
        codes = set()

        def walk(concepts):
            for c in concepts:
                codes.add((system, c["code"]))
                walk(c.get("concept", []))

        walk(cs.get("concept", []))
        return codes, None

    def expand(self, url, depth=0):
        """(set of (system, code), None) or (None, reason)."""
        url = url.split("|")[0]
        if url in self.cache:
            return self.cache[url]
        if depth > 8:
            return None, "value set nesting too deep"
        vs = self.pkg.vss.get(url)
        if vs is None:
            res = (None, "value set is not in the package")
        else:
            res = self._expand(vs, depth)
        self.cache[url] = res
        return res

    def _expand(self, vs, depth):
        compose = vs.get("compose")
        if not compose:
            return None, "value set has no compose"
        codes = set()
        for inc in compose.get("include", []):
            if "filter" in inc:
                return None, "include has a filter"
            part = None
            if "concept" in inc:
                part = {(inc["system"], c["code"]) for c in inc["concept"]}
            elif "system" in inc:
                part, why = self.cs_codes(inc["system"])
                if part is None:
                    return None, why
            for sub in inc.get("valueSet", []):
                s, why = self.expand(sub, depth + 1)
                if s is None:
                    return None, why
                part = s if part is None else part & s
            if part is None:
                return None, "include without system or value set"
            codes |= part
        for exc in compose.get("exclude", []):
            if "concept" not in exc or "filter" in exc or "valueSet" in exc:
                return None, "exclude without an explicit concept list"
            codes -= {(exc["system"], c["code"]) for c in exc["concept"]}
        if not codes:
            return None, "expansion is empty"
        return codes, None


# ---------------------------------------------------------------------------------------------
# The model


class Model:
    def __init__(self, pkg):
        self.pkg = pkg
        self.types = base_types(pkg)
        self.vs = ValueSets(pkg)
        self.type_names = sorted(self.types)
        self.type_index = {n: i for i, n in enumerate(self.type_names)}
        self.nodes = []  # dicts: path, elems (list of dict)
        self.node_of_type = {}
        self.node_of_profile = {}
        self.bindings = {}  # vs url -> index (after sorting)
        self.binding_users = {}  # vs url -> list of element paths
        self.skipped_bindings = {}  # vs url -> (reason, [paths])
        self.choices = []
        self.regexes = []
        self.build()

    # -- nodes ------------------------------------------------------------------------------

    def build(self):
        # Nodes are built per complex type / resource in name order, then profiles.
        for name in self.type_names:
            sd = self.types[name]
            if sd["kind"] == "primitive-type":
                continue
            self.node_of_type[name] = self.build_sd(sd, name)
        for name in self.type_names:
            sd = self.types[name]
            if sd["kind"] == "primitive-type":
                rx = self.primitive_regex(sd)
                sd["_regex"] = rx
        # Profiles referenced from element types (SimpleQuantity, MoneyQuantity).
        pending = sorted({p for n in self.nodes for e in n["elems"] for p in e.get("_profiles", [])})
        for url in pending:
            sd = self.pkg.sds.get(url)
            if sd is None or sd.get("kind") != "complex-type":
                continue
            self.node_of_profile[url] = self.build_sd(sd, sd["id"])
        for n in self.nodes:
            for e in n["elems"]:
                prof = e.pop("_profiles", [])
                if e["node_ref"] is None and e["kind"] == KIND_COMPLEX:
                    node = None
                    for p in prof:
                        if p in self.node_of_profile:
                            node = self.node_of_profile[p]
                    if node is None:
                        node = self.node_of_type.get(e["type"])
                    e["node"] = node
        self.finish()

    def build_sd(self, sd, label):
        elems = sd["snapshot"]["element"]
        root = elems[0]["path"]
        is_resource = sd["kind"] == "resource"
        children = {}
        paths = []
        by_path = {}
        for ed in elems:
            p = ed["path"]
            by_path[p] = ed
            paths.append(p)
            if p != root:
                children.setdefault(p.rsplit(".", 1)[0], []).append(p)
        node_ids = {}

        def make_node(path, display):
            idx = len(self.nodes)
            node = {"path": display, "elems": [], "idx": idx}
            self.nodes.append(node)
            node_ids[path] = idx
            return node

        pending_refs = []

        def fill(path, display):
            node = make_node(path, display)
            for cp in children.get(path, []):
                ed = by_path[cp]
                name = cp.rsplit(".", 1)[1]
                cdisplay = display + "." + name
                mx = ed["max"]
                mx = UNBOUNDED if mx == "*" else int(mx)
                mn = int(ed["min"])
                binding = None
                b = ed.get("binding")
                if b and b.get("strength") == "required" and b.get("valueSet"):
                    binding = b["valueSet"].split("|")[0]
                flags = 0
                if ed.get("isSummary"):
                    flags |= EF_SUMMARY
                if ed.get("isModifier"):
                    flags |= EF_MODIFIER
                base = {"min": mn, "max": mx, "binding": binding, "flags": flags,
                        "path": cdisplay, "node_ref": None, "node": None}
                if "contentReference" in ed:
                    ref = ed["contentReference"]
                    if not ref.startswith("#"):
                        raise GenError("%s: external contentReference %s" % (cp, ref))
                    e = dict(base, name=name, type="BackboneElement", kind=KIND_COMPLEX,
                             node_ref=ref[1:])
                    pending_refs.append(e)
                    node["elems"].append(e)
                    continue
                types = ed.get("type", [])
                if not types:
                    raise GenError("%s has no type" % cp)
                if name.endswith("[x]"):
                    stem = name[:-3]
                    variants = []
                    for t in types:
                        code = type_code(t, cp, is_resource)
                        vname = stem + code[0].upper() + code[1:]
                        e = dict(base, name=vname, type=code, kind=self.kind_of(code, cp),
                                 choice_name=stem, flags=flags | EF_CHOICE,
                                 _profiles=t.get("profile", []))
                        variants.append(e)
                        node["elems"].append(e)
                    self.choices.append({"name": stem, "node": node["idx"], "variants": variants,
                                         "path": cdisplay})
                    continue
                if len(types) != 1:
                    raise GenError("%s has %d types but is not a choice" % (cp, len(types)))
                code = type_code(types[0], cp, is_resource)
                if cp in children:
                    # An inline backbone element (type BackboneElement or Element).
                    e = dict(base, name=name, type=code, kind=KIND_COMPLEX)
                    node["elems"].append(e)
                    e["node"] = fill(cp, cdisplay)
                    e["node_ref"] = "(inline)"
                    continue
                e = dict(base, name=name, type=code, kind=self.kind_of(code, cp),
                         _profiles=types[0].get("profile", []))
                node["elems"].append(e)
            return node["idx"]

        top = fill(root, label)
        for e in pending_refs:
            if e["node_ref"] not in node_ids:
                raise GenError("contentReference #%s not found" % e["node_ref"])
            e["node"] = node_ids[e["node_ref"]]
        return top

    def kind_of(self, code, path):
        sd = self.types.get(code)
        if sd is None:
            raise GenError("%s: unknown type %s" % (path, code))
        return {"primitive-type": KIND_PRIMITIVE, "complex-type": KIND_COMPLEX,
                "resource": KIND_RESOURCE}[sd["kind"]]

    def primitive_regex(self, sd):
        if sd["type"] in REGEX_SKIP:
            return None
        for ed in sd["snapshot"]["element"]:
            if ed["path"] == sd["type"] + ".value":
                for t in ed.get("type", []):
                    for x in t.get("extension", []):
                        if x.get("url") == REGEX_EXT:
                            return translate_regex(x["valueString"])
        return None

    # -- finishing: sort, index, bindings ---------------------------------------------------

    def finish(self):
        # Bindings.
        used = {}
        for n in self.nodes:
            for e in n["elems"]:
                if e["binding"]:
                    used.setdefault(e["binding"], []).append(e["path"])
        for url in sorted(used):
            codes, why = self.vs.expand(url)
            if codes is None:
                self.skipped_bindings[url] = (why, sorted(set(used[url])))
        self.vs_urls = sorted(u for u in used if u not in self.skipped_bindings)
        self.vs_index = {u: i for i, u in enumerate(self.vs_urls)}
        for n in self.nodes:
            for e in n["elems"]:
                if e["binding"] in self.skipped_bindings:
                    e["binding"] = None
                # Only code, Coding and CodeableConcept carry codes we can check.
                if e["binding"] and e["type"] not in ("code", "Coding", "CodeableConcept"):
                    e["binding"] = None
        # Sort each node's elements by name (bytewise, as the C lookup compares).
        for n in self.nodes:
            names = [e["name"] for e in n["elems"]]
            if len(set(names)) != len(names):
                raise GenError("%s: duplicate element names" % n["path"])
            n["elems"].sort(key=lambda e: e["name"].encode())
        # Required slots: one bit per required element or required choice group.
        self.choices.sort(key=lambda c: (c["node"], c["name"]))
        for ci, c in enumerate(self.choices):
            for v in c["variants"]:
                v["choice"] = ci
        for n in self.nodes:
            slot = 0
            seen_choice = {}
            for e in n["elems"]:
                e["req"] = 0xFF
                if e["min"] == 0:
                    continue
                if "choice" in e:
                    if e["choice"] not in seen_choice:
                        seen_choice[e["choice"]] = slot
                        slot += 1
                    e["req"] = seen_choice[e["choice"]]
                else:
                    e["req"] = slot
                    slot += 1
            if slot > 64:
                raise GenError("%s has more than 64 required elements" % n["path"])
            n["n_required"] = slot
        # Flatten.
        self.elems = []
        for n in self.nodes:
            n["first"] = len(self.elems)
            for e in n["elems"]:
                e["idx"] = len(self.elems)
                self.elems.append(e)
        self.choice_elems = []
        for c in self.choices:
            c["first"] = len(self.choice_elems)
            for v in sorted(c["variants"], key=lambda e: e["idx"]):
                self.choice_elems.append(v["idx"])
        # Regexes.
        rx = sorted({self.types[n]["_regex"] for n in self.type_names
                     if self.types[n]["kind"] == "primitive-type" and self.types[n]["_regex"]})
        self.regexes = rx
        self.regex_index = {r: i for i, r in enumerate(rx)}
        for lim, what in ((len(self.nodes), "nodes"), (len(self.elems), "elements"),
                          (len(self.choices), "choices"), (len(self.vs_urls), "value sets"),
                          (len(self.choice_elems), "choice variants")):
            if lim >= NONE16:
                raise GenError("too many %s for 16-bit indexes" % what)


# ---------------------------------------------------------------------------------------------
# Emitting C


class Strings:
    """A pool of NUL-terminated strings addressed by offset; offset 0 is the empty string."""

    def __init__(self):
        self.offsets = {"": 0}
        self.items = [""]
        self.size = 1

    def add(self, s):
        if s not in self.offsets:
            self.offsets[s] = self.size
            self.items.append(s)
            self.size += len(s.encode("utf-8")) + 1
        return self.offsets[s]


def c_literal(s):
    out = []
    for b in s.encode("utf-8"):
        ch = chr(b)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "?":
            out.append("\\?")  # no trigraphs
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif 32 <= b < 127:
            out.append(ch)
        else:
            out.append("\\%03o" % b)
    return '"' + "".join(out) + '"'


def name_len(name):
    n = len(name.encode("utf-8"))
    if n > 255:
        raise GenError("name %r is too long" % name)
    return n


def emit(model):
    pool = Strings()
    # Strings in a fixed order so offsets are stable: types, nodes, elements, value sets, codes.
    for n in model.type_names:
        pool.add(n)
    for n in model.nodes:
        pool.add(n["path"])
    for e in model.elems:
        pool.add(e["name"])
    for c in model.choices:
        pool.add(c["name"])
    for r in model.regexes:
        pool.add(r)
    vs_rows = []
    code_rows = []
    for url in model.vs_urls:
        codes, _ = model.vs.expand(url)
        first = len(code_rows)
        for system, code in sorted(codes, key=lambda sc: (sc[1].encode(), sc[0].encode())):
            code_rows.append((pool.add(code), pool.add(system), code, system))
        vs_rows.append((pool.add(url), first, len(codes), url))

    h = []
    h.append("/* model_gen.h - generated by tools/gen_fhir.py from hl7.fhir.r4.examples 4.0.1."
             " Do not edit. */")
    h.append("#ifndef JK_FHIR_MODEL_GEN_H")
    h.append("#define JK_FHIR_MODEL_GEN_H")
    h.append("")
    h.append('#include "fhir/model.h"')
    h.append("")
    h.append("#define JK_FHIR_N_TYPES %d" % len(model.type_names))
    h.append("#define JK_FHIR_N_NODES %d" % len(model.nodes))
    h.append("#define JK_FHIR_N_ELEMS %d" % len(model.elems))
    h.append("#define JK_FHIR_N_CHOICES %d" % len(model.choices))
    h.append("#define JK_FHIR_N_CHOICE_ELEMS %d" % len(model.choice_elems))
    h.append("#define JK_FHIR_N_VALUESETS %d" % len(vs_rows))
    h.append("#define JK_FHIR_N_CODES %d" % len(code_rows))
    h.append("#define JK_FHIR_N_REGEX %d" % len(model.regexes))
    h.append("#define JK_FHIR_STR_BYTES %d" % pool.size)
    dfa_sizes = [compile_dfa(r) for r in model.regexes]
    h.append("#define JK_FHIR_DFA_CLASS_BYTES %d" % (256 * len(dfa_sizes)))
    h.append("#define JK_FHIR_DFA_TRANS %d" % sum(len(d[2]) * d[1] for d in dfa_sizes))
    h.append("#define JK_FHIR_DFA_STATES %d" % sum(len(d[2]) for d in dfa_sizes))
    h.append("")
    h.append("extern const char jk_fhir_gen_str[JK_FHIR_STR_BYTES];")
    h.append("extern const struct jk_fhir_type jk_fhir_gen_types[JK_FHIR_N_TYPES];")
    h.append("extern const struct jk_fhir_node jk_fhir_gen_nodes[JK_FHIR_N_NODES];")
    h.append("extern const struct jk_fhir_elem jk_fhir_gen_elems[JK_FHIR_N_ELEMS];")
    h.append("extern const struct jk_fhir_choice jk_fhir_gen_choices[JK_FHIR_N_CHOICES];")
    h.append("extern const uint16_t jk_fhir_gen_choice_elems[JK_FHIR_N_CHOICE_ELEMS];")
    h.append("extern const struct jk_fhir_valueset jk_fhir_gen_valuesets[JK_FHIR_N_VALUESETS];")
    h.append("extern const struct jk_fhir_code jk_fhir_gen_codes[JK_FHIR_N_CODES];")
    h.append("extern const uint32_t jk_fhir_gen_regex[JK_FHIR_N_REGEX];")
    h.append("extern const struct jk_fhir_dfa jk_fhir_gen_dfas[JK_FHIR_N_REGEX];")
    h.append("extern const uint8_t jk_fhir_gen_dfa_classes[JK_FHIR_DFA_CLASS_BYTES];")
    h.append("extern const uint16_t jk_fhir_gen_dfa_trans[JK_FHIR_DFA_TRANS];")
    h.append("extern const uint8_t jk_fhir_gen_dfa_accept[JK_FHIR_DFA_STATES];")
    h.append("")
    h.append("#endif")
    h.append("")

    c = []
    c.append("/* model_gen.c - FHIR R4 model tables, generated by tools/gen_fhir.py from"
             " hl7.fhir.r4.examples 4.0.1. Do not edit. */")
    c.append('#include "fhir/model_gen.h"')
    c.append("")
    c.append("/* Types by name: name, node, regex, kind, json, is_abstract, name length. */")
    c.append("const struct jk_fhir_type jk_fhir_gen_types[JK_FHIR_N_TYPES] = {")
    for name in model.type_names:
        sd = model.types[name]
        kind = {"primitive-type": KIND_PRIMITIVE, "complex-type": KIND_COMPLEX,
                "resource": KIND_RESOURCE}[sd["kind"]]
        if kind == KIND_PRIMITIVE:
            js = PRIM_JSON.get(name, JSON_STRING)
            rx = model.regex_index[sd["_regex"]] if sd["_regex"] else NONE16
            node = NONE16
        else:
            js = JSON_OBJECT
            rx = NONE16
            node = model.node_of_type[name]
        c.append("    {%d, %d, %d, %d, %d, %d, %d}, /* %s */" % (
            pool.add(name), node, rx, kind, js, 1 if sd.get("abstract") else 0,
            name_len(name), name))
    c.append("};")
    c.append("")
    c.append("/* Nodes (a type or a backbone element): path, first element, element count,"
             " required count. */")
    c.append("const struct jk_fhir_node jk_fhir_gen_nodes[JK_FHIR_N_NODES] = {")
    for n in model.nodes:
        c.append("    {%d, %d, %d, %d}, /* %d %s */" % (pool.add(n["path"]), n["first"],
                                                       len(n["elems"]), n["n_required"], n["idx"],
                                                       n["path"]))
    c.append("};")
    c.append("")
    c.append("/* Elements, each node's children sorted by name: name, type, node, binding,"
             " choice, max, min, required bit, flags, name length. */")
    c.append("const struct jk_fhir_elem jk_fhir_gen_elems[JK_FHIR_N_ELEMS] = {")
    starts = {n["first"]: n for n in model.nodes}
    for e in model.elems:
        if e["idx"] in starts and starts[e["idx"]]["elems"]:
            c.append("    /* %s */" % starts[e["idx"]]["path"])
        node = e["node"] if e["node"] is not None else NONE16
        binding = model.vs_index[e["binding"]] if e["binding"] else NONE16
        choice = e.get("choice", NONE16)
        c.append("    {%d, %d, %d, %d, %d, %d, %d, %d, %d, %d}," % (
            pool.add(e["name"]), model.type_index[e["type"]], node, binding, choice, e["max"],
            e["min"], e["req"], e["flags"], name_len(e["name"])))
    c.append("};")
    c.append("")
    c.append("/* Choice elements (value[x]): name, node, first variant, variant count. */")
    c.append("const struct jk_fhir_choice jk_fhir_gen_choices[JK_FHIR_N_CHOICES] = {")
    for ci, ch in enumerate(model.choices):
        c.append("    {%d, %d, %d, %d}, /* %d %s[x] */" % (pool.add(ch["name"]), ch["node"],
                                                         ch["first"], len(ch["variants"]), ci,
                                                         ch["path"]))
    c.append("};")
    c.append("")
    c.append("const uint16_t jk_fhir_gen_choice_elems[JK_FHIR_N_CHOICE_ELEMS] = {")
    row = []
    for v in model.choice_elems:
        row.append("%d," % v)
        if len(row) == 16:
            c.append("    " + " ".join(row))
            row = []
    if row:
        c.append("    " + " ".join(row))
    c.append("};")
    c.append("")
    c.append("/* Value sets of required bindings expanded from the package: url, first code,"
             " code count. */")
    c.append("const struct jk_fhir_valueset jk_fhir_gen_valuesets[JK_FHIR_N_VALUESETS] = {")
    for i, (off, first, cnt, url) in enumerate(vs_rows):
        c.append("    {%d, %d, %d}, /* %d %s */" % (off, first, cnt, i, url))
    c.append("};")
    c.append("")
    c.append("/* Codes of each value set sorted by code then system: code, system. */")
    c.append("const struct jk_fhir_code jk_fhir_gen_codes[JK_FHIR_N_CODES] = {")
    row = []
    for off, sys_off, _, _ in code_rows:
        row.append("{%d, %d}," % (off, sys_off))
        if len(row) == 8:
            c.append("    " + " ".join(row))
            row = []
    if row:
        c.append("    " + " ".join(row))
    c.append("};")
    c.append("")
    c.append("/* POSIX extended regexes of the primitive types, anchored. */")
    c.append("const uint32_t jk_fhir_gen_regex[JK_FHIR_N_REGEX] = {")
    for r in model.regexes:
        shown = r.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        c.append("    %d, /* %s */" % (pool.add(r), shown.replace("*/", "* /")))
    c.append("};")
    c.append("")
    dfas = [compile_dfa(r) for r in model.regexes]
    c.append("/* The same regexes compiled to DFAs over bytes: class map, transitions, accepting"
             " states, class count, start state. State 0 is the dead state. */")
    c.append("const struct jk_fhir_dfa jk_fhir_gen_dfas[JK_FHIR_N_REGEX] = {")
    off_cls = off_tr = off_acc = 0
    for class_of, n_classes, rows, accepting, start in dfas:
        c.append("    {%d, %d, %d, %d, %d}," % (off_cls, off_tr, off_acc, n_classes, start))
        off_cls += 256
        off_tr += len(rows) * n_classes
        off_acc += len(rows)
    c.append("};")
    c.append("")
    c.append("const uint8_t jk_fhir_gen_dfa_classes[JK_FHIR_DFA_CLASS_BYTES] = {")
    for i, (class_of, _, _, _, _) in enumerate(dfas):
        c.append("    /* %d */" % i)
        for k in range(0, 256, 32):
            c.append("    " + " ".join("%d," % x for x in class_of[k:k + 32]))
    c.append("};")
    c.append("")
    c.append("const uint16_t jk_fhir_gen_dfa_trans[JK_FHIR_DFA_TRANS] = {")
    for i, (_, n_classes, rows, _, _) in enumerate(dfas):
        c.append("    /* %d */" % i)
        for row in rows:
            c.append("    " + " ".join("%d," % x for x in row))
    c.append("};")
    c.append("")
    c.append("const uint8_t jk_fhir_gen_dfa_accept[JK_FHIR_DFA_STATES] = {")
    for i, (_, _, _, accepting, _) in enumerate(dfas):
        c.append("    /* %d */ " % i + " ".join("%d," % (1 if a else 0) for a in accepting))
    c.append("};")
    c.append("")
    c.append("/* Every string the tables point at, NUL-separated; offsets above index it. */")
    c.append("const char jk_fhir_gen_str[JK_FHIR_STR_BYTES] =")
    line = "   "
    lines = []
    for s in pool.items[1:]:
        lit = " " + c_literal(s)[:-1] + '\\0"'
        if len(line) + len(lit) > 100:
            lines.append(line)
            line = "   "
        line += lit
    lines.append(line)
    c.append('    "\\0"')
    c.extend(lines)
    c[-1] += ";"
    c.append("")
    return "\n".join(c), "\n".join(h), model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the committed generated files are out of date")
    ap.add_argument("--report", action="store_true",
                    help="print the skipped bindings and table sizes")
    ap.add_argument("--package", default=PKG, help="folder of the unpacked R4 package")
    args = ap.parse_args()
    try:
        model = Model(Package(args.package))
        c_text, h_text, model = emit(model)
    except GenError as e:
        print("gen_fhir: %s" % e, file=sys.stderr)
        return 2
    if args.report:
        print("types %d nodes %d elems %d choices %d valuesets %d regexes %d" % (
            len(model.type_names), len(model.nodes), len(model.elems), len(model.choices),
            len(model.vs_urls), len(model.regexes)))
        for url, (why, paths) in sorted(model.skipped_bindings.items()):
            print("skipped %s: %s (%s)" % (url, why, ", ".join(paths)))
    outputs = ((OUT_C, c_text), (OUT_H, h_text))
    if args.check:
        stale = []
        for path, text in outputs:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() == text:
                        continue
            except OSError:
                pass
            stale.append(os.path.relpath(path, ROOT))
        if stale:
            print("gen_fhir: %s out of date; run python3 tools/gen_fhir.py" % ", ".join(stale),
                  file=sys.stderr)
            return 1
        return 0
    for path, text in outputs:
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
