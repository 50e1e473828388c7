#!/usr/bin/env python3
"""gen_search.py - generate the FHIR R4 search parameter tables (src/fhir/search_gen.c) from the
official SearchParameter and CompartmentDefinition resources of the definitions package
(node_modules/hl7.fhir.r4.examples, installed by `npm ci`).

    python3 tools/gen_search.py           writes src/fhir/search_gen.c
    python3 tools/gen_search.py --check   regenerates in memory, exits 1 if the committed file differs
    python3 tools/gen_search.py --report  also prints the counts and every skipped expression

Each parameter's FHIRPath expression is split per resource type and compiled here, once, into
extraction paths: element names from the resource root, each optionally filtered, ending at a value
whose FHIR type (from the StructureDefinitions) says how extract.c reads it. Standard library only;
the output is deterministic (sorted, no timestamps or paths). See docs/internals/search.md.
"""

import argparse
import glob
import os
import re
import sys

sys.dont_write_bytecode = True  # no tools/__pycache__ from importing gen_fhir
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_fhir  # noqa: E402  (the package loader and type helpers are shared)

ROOT = gen_fhir.ROOT
PKG = gen_fhir.PKG
OUT_C = os.path.join(ROOT, "src", "fhir", "search_gen.c")

SP_TYPES = {
    "number": "JK_SP_NUMBER",
    "date": "JK_SP_DATE",
    "string": "JK_SP_STRING",
    "token": "JK_SP_TOKEN",
    "reference": "JK_SP_REFERENCE",
    "composite": "JK_SP_COMPOSITE",
    "quantity": "JK_SP_QUANTITY",
    "uri": "JK_SP_URI",
    "special": "JK_SP_SPECIAL",
}

# How extract.c reads the value at the end of a path (enum jk_sp_vtype in searchparam_int.h),
# by parameter type and FHIR type of the value. A (parameter type, FHIR type) pair that is not
# here cannot be indexed: that variant of the path is dropped (and reported).
STRINGISH = ["string", "markdown", "code", "id", "uri", "url", "canonical", "oid", "uuid"]
VTYPES = {
    "string": dict([(t, "STR") for t in STRINGISH] + [("HumanName", "HUMANNAME"),
                                                      ("Address", "ADDRESS")]),
    "token": dict([(t, "STR") for t in STRINGISH if t != "markdown"] + [
        ("boolean", "BOOL"), ("Coding", "CODING"), ("CodeableConcept", "CC"),
        ("Identifier", "IDENT"), ("ContactPoint", "CONTACT")]),
    "date": {"date": "DATE", "dateTime": "DATE", "instant": "DATE", "Period": "PERIOD",
             "Timing": "TIMING"},
    "number": {"decimal": "NUM", "integer": "NUM", "unsignedInt": "NUM", "positiveInt": "NUM",
               "Range": "RANGE"},
    "quantity": {"Quantity": "QTY", "Age": "QTY", "Duration": "QTY", "Count": "QTY",
                 "Distance": "QTY", "SimpleQuantity": "QTY", "MoneyQuantity": "QTY",
                 "Money": "MONEY", "Range": "RANGE"},
    "reference": {"Reference": "REF", "canonical": "CANON", "uri": "CANON", "url": "CANON"},
    "uri": {"uri": "URI", "url": "URI", "canonical": "URI", "oid": "URI", "uuid": "URI"},
}

# Parameters answered without index rows: from the resource table (_id, _lastUpdated).
NO_ROWS = {"_id", "_lastUpdated"}

# Expressions FHIRPath cannot say as a path, handled by a dedicated extraction.
SPECIAL_EXPR = {
    "Patient.deceased.exists() and Patient.deceased != false": "DECEASED",
}

WHERE_NONE, WHERE_EQ, WHERE_HAS_EXT = 0, 1, 2
MAX_U16 = 0xFFFF


class GenError(Exception):
    pass


class Skip(Exception):
    """An expression (or one per-type part of it) that cannot be compiled, with the reason."""


# ---------------------------------------------------------------------------------------------
# FHIRPath subset: tokens and a small parser


TOKEN_RE = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+)|(?P<id>%?[A-Za-z_][A-Za-z0-9_]*)"
                      r"|(?P<op>!=|[().\[\]|=,]))")


def tokenize(s):
    out, pos = [], 0
    s = s.strip()
    while pos < len(s):
        m = TOKEN_RE.match(s, pos)
        if not m or m.end() == pos:
            raise Skip("cannot read the FHIRPath at %r" % s[pos:pos + 20])
        pos = m.end()
        if m.group("str") is not None:
            out.append(("str", m.group("str")[1:-1]))
        elif m.group("num") is not None:
            out.append(("num", int(m.group("num"))))
        elif m.group("id") is not None:
            out.append(("id", m.group("id")))
        else:
            out.append(("op", m.group("op")))
    out.append(("end", None))
    return out


class Parser:
    """Parses the FHIRPath subset the R4 search parameters use into a small tree:
    ('union', [a, b]), ('path', root, [ops]) where root is a name (or None for a path relative to
    the context) and ops are ('child', n), ('as', T), ('where_eq', elem, value),
    ('resolve_is', T), ('ext', url), ('has_ext', url), ('index', n), ('sub', tree)."""

    def __init__(self, text):
        self.toks = tokenize(text)
        self.i = 0

    def peek(self, k=0):
        return self.toks[self.i + k]

    def take(self, kind=None, value=None):
        t = self.toks[self.i]
        if (kind and t[0] != kind) or (value is not None and t[1] != value):
            raise Skip("unexpected %r" % (t[1],))
        self.i += 1
        return t

    def parse(self):
        tree = self.union()
        if self.peek()[0] != "end":
            raise Skip("unsupported FHIRPath operator %r" % (self.peek()[1],))
        return tree

    def union(self):
        items = [self.term()]
        while self.peek() == ("op", "|"):
            self.take()
            items.append(self.term())
        return items[0] if len(items) == 1 else ("union", items)

    def term(self):
        t = self.chain()
        while self.peek() == ("id", "as"):
            self.take()
            t = ("chain", t, [("as", self.take("id")[1])])
        return t

    def chain(self):
        if self.peek() == ("op", "("):
            self.take()
            base = self.union()
            self.take("op", ")")
        else:
            name = self.take("id")[1]
            if name.startswith("%"):
                raise Skip("%s (a value outside the element) is not supported" % name)
            base = ("name", name)
        ops = []
        while True:
            t = self.peek()
            if t == ("op", "."):
                self.take()
                ops.append(self.invocation())
            elif t == ("op", "["):
                self.take()
                n = self.take("num")[1]
                self.take("op", "]")
                ops.append(("index", n))
            else:
                break
        return ("chain", base, ops) if ops else base

    def invocation(self):
        name = self.take("id")[1]
        if self.peek() != ("op", "("):
            return ("child", name)
        self.take()
        if name in ("as", "ofType"):
            arg = self.take("id")[1]
            self.take("op", ")")
            return ("as", arg)
        if name == "extension":
            url = self.take("str")[1]
            self.take("op", ")")
            return ("ext", url)
        if name == "where":
            t = self.peek()
            if t == ("id", "resolve"):
                self.take()
                self.take("op", "(")
                self.take("op", ")")
                self.take("id", "is")
                typ = self.take("id")[1]
                self.take("op", ")")
                return ("resolve_is", typ)
            if t == ("id", "hasExtension"):
                self.take()
                self.take("op", "(")
                url = self.take("str")[1]
                self.take("op", ")")
                self.take("op", ")")
                return ("has_ext", url)
            if t[0] == "id" and self.peek(1) == ("op", "="):
                elem = self.take("id")[1]
                self.take("op", "=")
                val = self.take("str")[1]
                self.take("op", ")")
                return ("where_eq", elem, val)
            raise Skip("unsupported where() condition")
        raise Skip("unsupported function %s()" % name)


def split_union(expr):
    """The top-level ' | ' parts of expr (parentheses and quotes respected)."""
    parts, depth, cur, q = [], 0, [], False
    for ch in expr:
        if ch == "'":
            q = not q
        if not q and ch == "(":
            depth += 1
        if not q and ch == ")":
            depth -= 1
        if not q and depth == 0 and ch == "|":
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def part_root(part):
    """The resource type a part starts from ('(Observation.value as Quantity)' -> Observation)."""
    m = re.match(r"\(*\s*([A-Za-z]+)", part)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------------
# The model: element types from the StructureDefinition snapshots


class Model:
    def __init__(self, pkg):
        self.types = gen_fhir.base_types(pkg)
        self.elems = {}
        for name, sd in self.types.items():
            d = {}
            for e in sd.get("snapshot", {}).get("element", []):
                d[e["path"]] = e
            self.elems[name] = d
        self.resources = sorted(n for n, sd in self.types.items() if sd.get("kind") == "resource")
        self.concrete = [n for n in self.resources if not self.types[n].get("abstract")]
        self.vsets = gen_fhir.ValueSets(pkg)
        self.sds = pkg.sds

    def extension_types(self, url):
        """The value types an extension's definition allows, or None when it is not known."""
        sd = self.sds.get(url)
        if sd is None:
            return None
        for e in sd.get("snapshot", {}).get("element", []):
            if e["path"] == "Extension.value[x]" and e.get("max") != "0":
                return {t["code"] for t in e.get("type", [])}
        return None

    def has_children(self, tname, path):
        pre = path + "."
        return any(p.startswith(pre) for p in self.elems[tname])

    def child(self, ctx, name):
        """[(json name, fhir type, new ctx, element)] for child name of ctx = (type, path)."""
        tname, prefix = ctx
        table = self.elems.get(tname)
        if table is None:
            raise Skip("%s has no elements" % tname)
        e = table.get(prefix + "." + name)
        is_choice = False
        if e is None:
            e = table.get(prefix + "." + name + "[x]")
            is_choice = e is not None
        if e is None:
            raise Skip("%s has no element %s" % (prefix, name))
        if "contentReference" in e:
            ref = e["contentReference"].lstrip("#")
            return [(name, "BackboneElement", (tname, ref), e)]
        out = []
        for t in e.get("type", []):
            code = gen_fhir.type_code(t, e["path"], tname in self.resources)
            if any(p.endswith("/SimpleQuantity") for p in t.get("profile", [])):
                code = "SimpleQuantity"
            jname = name + code[0].upper() + code[1:] if is_choice else name
            if code in ("BackboneElement", "Element") and self.has_children(tname, e["path"]):
                out.append((jname, code, (tname, e["path"]), e))
            else:
                base = "Quantity" if code == "SimpleQuantity" else code
                out.append((jname, code, (base, base), e))
        return out

    def code_system(self, elem):
        """The one code system of a `code` element's required binding, or None."""
        b = elem.get("binding") or {}
        if b.get("strength") != "required" or "valueSet" not in b:
            return None
        codes, _why = self.vsets.expand(b["valueSet"])
        if not codes:
            return None
        systems = {s for s, _c in codes}
        return systems.pop() if len(systems) == 1 else None


# ---------------------------------------------------------------------------------------------
# Compiling a part into paths


class Cand:
    """One way a path can go: steps so far, where it is, the FHIR type found there."""

    def __init__(self, steps, ctx, ftype, elem=None, target=None, ext_types=None):
        self.steps = steps  # [(json name, where kind, where elem, where value)]
        self.ctx = ctx  # (type whose definition holds the element, element path)
        self.ftype = ftype  # FHIR type of the value here
        self.elem = elem  # its ElementDefinition (for bindings)
        self.target = target  # where(resolve() is X)
        self.ext_types = ext_types  # after extension('url'): the value types it allows

    def copy(self):
        return Cand(list(self.steps), self.ctx, self.ftype, self.elem, self.target,
                    self.ext_types)


def eval_tree(model, tree, start):
    """Candidates reached by tree from start (a list of Cand)."""
    kind = tree[0]
    if kind == "union":
        out = []
        for t in tree[1]:
            out.extend(eval_tree(model, t, start))
        return out
    if kind == "self":  # the context of a composite component
        return [c.copy() for c in start]
    if kind == "name":  # the root of an absolute path: the resource type
        name = tree[1]
        out = []
        for c in start:
            if name == c.ctx[0] or name in ("Resource", "DomainResource"):
                out.append(c.copy())
            else:
                # InsurancePlan-name is written 'name | alias' in R4: a path relative to the
                # root. Read it as one when the root has that element.
                out.extend(apply_op(model, ("child", name), [c]))
        return out
    if kind == "chain":
        cands = eval_tree(model, tree[1], start)
        for op in tree[2]:
            cands = apply_op(model, op, cands)
        return cands
    raise Skip("unsupported expression")


def apply_op(model, op, cands):
    kind = op[0]
    out = []
    if kind == "index":
        raise Skip("an index ([%d]) selects one repetition, which paths cannot" % op[1])
    for c in cands:
        if kind == "child":
            for jname, code, ctx, e in model.child(c.ctx, op[1]):
                n = c.copy()
                n.steps.append((jname, WHERE_NONE, None, None))
                n.ctx, n.ftype, n.elem = ctx, code, e
                out.append(n)
        elif kind == "as":
            want = op[1].lower()
            if c.ftype.lower() == want or (want == "quantity" and c.ftype == "SimpleQuantity"):
                out.append(c)
        elif kind == "where_eq":
            model.child(c.ctx, op[1])  # the element must exist
            if not c.steps:
                raise Skip("a filter on the resource itself")
            n = c.copy()
            last = n.steps[-1]
            if last[1] != WHERE_NONE:
                raise Skip("two filters on one element")
            n.steps[-1] = (last[0], WHERE_EQ, op[1], op[2])
            out.append(n)
        elif kind == "has_ext":
            if not c.steps:
                raise Skip("a filter on the resource itself")
            n = c.copy()
            last = n.steps[-1]
            if last[1] != WHERE_NONE:
                raise Skip("two filters on one element")
            n.steps[-1] = (last[0], WHERE_HAS_EXT, "extension", op[1])
            out.append(n)
        elif kind == "ext":
            n = c.copy()
            n.steps.append(("extension", WHERE_EQ, "url", op[1]))
            n.ctx, n.ftype, n.elem = ("Extension", "Extension"), "Extension", None
            n.ext_types = model.extension_types(op[1])
            out.append(n)
        elif kind == "resolve_is":
            if c.ftype != "Reference":
                raise Skip("resolve() on a %s" % c.ftype)
            if op[1] not in model.concrete:
                raise Skip("resolve() is %s: not a resource type" % op[1])
            n = c.copy()
            n.target = op[1]
            out.append(n)
        else:
            raise Skip("unsupported operation %s" % kind)
    if kind == "as" and not out:
        raise Skip("no element of type %s there" % op[1])
    return out


def compile_part(model, text, ctx, relative=False):
    """Candidates for one expression part, from ctx (the resource root or a composite base)."""
    tree = Parser(text).parse()
    start = [Cand([], ctx, ctx[0] if not relative else "BackboneElement")]
    if relative:
        tree = relative_tree(tree)
    cands = eval_tree(model, tree, start)
    out = []
    for c in cands:
        if c.ftype == "Extension":  # extension('url') alone means its value
            allowed = c.ext_types
            out.extend(v for v in apply_op(model, ("child", "value"), [c])
                       if allowed is None or v.ftype in allowed)
        else:
            out.append(c)
    return out


def relative_tree(tree):
    """A component expression ('value.as(Quantity)') is relative to its composite's base: its
    first name is an element, so mark it as a child step."""
    if tree[0] == "union":
        return ("union", [relative_tree(t) for t in tree[1]])
    if tree[0] == "name":
        return ("chain", ("self",), [("child", tree[1])])
    if tree[0] == "chain":
        return ("chain", relative_tree(tree[1]), tree[2])
    return tree


# ---------------------------------------------------------------------------------------------
# Search parameters


class Path:
    def __init__(self, steps, vtype, target, system):
        self.steps = steps
        self.vtype = vtype
        self.target = target
        self.system = system

    def key(self):
        return (tuple(self.steps), self.vtype, self.target or "", self.system or "")


class Param:
    def __init__(self, code, rtype, sptype, sp):
        self.code = code
        self.rtype = rtype
        self.sptype = sptype
        self.sp = sp
        self.targets = sorted(sp.get("target", []))
        self.components = []  # codes
        self.paths = []
        self.n_base = 0
        self.n_c1 = 0
        self.c1_type = None
        self.c2_type = None
        self.aux = None  # "<code>:of-type" or "<code>:identifier"
        self.dropped = []  # (FHIR type, path text) variants that could not be indexed


def cands_to_paths(model, cands, sptype, dropped, where):
    paths = []
    for c in cands:
        vt = VTYPES[sptype].get(c.ftype)
        if vt is None:
            # An extension's value[x] allows every type; only the ones of the parameter's
            # type are meant, so the others are not worth reporting.
            if not (c.steps and c.steps[-1][0].startswith("value") and len(c.steps) > 1
                    and c.steps[-2][0] == "extension"):
                dropped.append((c.ftype, where + " -> " + ".".join(s[0] for s in c.steps)))
            continue
        system = None
        if vt == "STR" and sptype == "token" and c.ftype == "code" and c.elem is not None:
            system = model.code_system(c.elem)
        paths.append(Path(c.steps, vt, c.target, system))
    # Keep the first of identical paths (unions such as 'A.x | A.x').
    seen, out = set(), []
    for p in paths:
        if p.key() not in seen:
            seen.add(p.key())
            out.append(p)
    return out


def type_parts(sp, rtype):
    """The parts of sp's expression that apply to rtype."""
    expr = sp.get("expression", "")
    parts = split_union(expr)
    base = sp.get("base", [])
    if len(base) == 1:
        return parts
    mine = [p for p in parts if part_root(p) == rtype]
    return mine


def load(pkg_dir):
    pkg = gen_fhir.Package(pkg_dir)
    model = Model(pkg)
    sps = []
    for path in sorted(glob.glob(os.path.join(pkg_dir, "SearchParameter-*.json"))):
        sps.append(gen_fhir.load_json(path))
    by_url = {sp["url"]: sp for sp in sps}
    cd = gen_fhir.load_json(os.path.join(pkg_dir, "CompartmentDefinition-patient.json"))
    return model, sps, by_url, cd


def build(model, sps, by_url):
    params = {}  # (rtype, code) -> Param
    skipped = []  # (sp id, resource type or '', expression, reason)
    for sp in sps:
        sid = sp["id"]
        if sid.startswith("example"):
            skipped.append((sid, "", sp.get("expression", ""),
                            "an example SearchParameter, not a definition"))
            continue
        if not sp.get("base"):
            skipped.append((sid, "", sp.get("expression", ""), "no base resource type"))
            continue
        sptype = sp["type"]
        if sptype == "special":
            skipped.append((sid, ",".join(sp["base"]), sp.get("expression", ""),
                            "special parameter (%s): needs its own query code" % sp["code"]))
            continue
        if not sp.get("expression"):
            skipped.append((sid, ",".join(sp["base"]), "", "no expression (%s)" % sp["code"]))
            continue
        for rtype in sp["base"]:
            if rtype not in model.types:
                raise GenError("%s: unknown base %s" % (sid, rtype))
            key = (rtype, sp["code"])
            if key in params:
                raise GenError("%s: %s?%s defined twice" % (sid, rtype, sp["code"]))
            p = Param(sp["code"], rtype, sptype, sp)
            try:
                compile_param(model, p, sp, rtype, by_url)
            except Skip as e:
                skipped.append((sid, rtype, " | ".join(type_parts(sp, rtype)), str(e)))
                continue
            params[key] = p
    added = add_identifier_params(model, params)
    return params, skipped, added


def add_identifier_params(model, params):
    """Types with an identifier element but no `identifier` parameter in R4 (AdverseEvent,
    CatalogEntry, ...) get one, so that conditional create, update and delete
    (`If-None-Exist: identifier=...`) work on every type that has identifiers."""
    added = []
    for rtype in model.concrete:
        if (rtype, "identifier") in params or model.elems[rtype].get(rtype + ".identifier") is None:
            continue
        p = Param("identifier", rtype, "token", {})
        cands = compile_part(model, rtype + ".identifier", (rtype, rtype))
        p.paths = cands_to_paths(model, cands, "token", p.dropped, rtype + ".identifier")
        p.aux = "identifier:of-type"
        params[(rtype, "identifier")] = p
        added.append(rtype)
    return added


def compile_param(model, p, sp, rtype, by_url):
    root = (rtype, rtype)
    parts = type_parts(sp, rtype)
    if not parts:
        raise Skip("the expression has no part for %s" % rtype)
    if p.code in NO_ROWS:
        return  # answered from the resource table
    if p.sptype == "composite":
        compile_composite(model, p, sp, rtype, parts, by_url)
        return
    text = " | ".join(parts)
    if text in SPECIAL_EXPR:
        p.paths = [Path([], SPECIAL_EXPR[text], None, None)]
        return
    cands = []
    for part in parts:
        cands.extend(compile_part(model, part, root))
    p.paths = cands_to_paths(model, cands, p.sptype, p.dropped, text)
    if not p.paths:
        raise Skip("no %s value can be read there (%s)" % (
            p.sptype, ", ".join(sorted({d[0] for d in p.dropped})) or "nothing found"))
    if p.sptype == "token" and any(x.vtype == "IDENT" for x in p.paths):
        p.aux = p.code + ":of-type"
    if p.sptype == "reference" and any(x.vtype == "REF" for x in p.paths):
        p.aux = p.code + ":identifier"


def compile_composite(model, p, sp, rtype, parts, by_url):
    comps = sp.get("component", [])
    if len(comps) != 2:
        raise Skip("a composite of %d components (only pairs are indexed)" % len(comps))
    base_cands = []
    for part in parts:
        base_cands.extend(compile_part(model, part, (rtype, rtype)))
    base_paths = []
    for c in base_cands:
        base_paths.append((Path(c.steps, "ELEMENT", None, None), c.ctx))
    comp_paths, comp_types = [], []
    for comp in comps:
        csp = by_url.get(comp["definition"])
        if csp is None:
            raise Skip("component %s is not in the package" % comp["definition"])
        ctype = csp["type"]
        if ctype not in VTYPES:
            raise Skip("component of type %s" % ctype)
        p.components.append(csp["code"])
        comp_types.append(ctype)
        paths = None
        for bp, ctx in base_paths:
            cands = compile_part(model, comp["expression"], ctx, relative=True)
            ps = cands_to_paths(model, cands, ctype, p.dropped, comp["expression"])
            if paths is None:
                paths = ps
            elif [x.key() for x in ps] != [x.key() for x in paths]:
                raise Skip("component %s differs between the bases" % comp["expression"])
        if not paths:
            raise Skip("component %s gives no %s value" % (comp["expression"], ctype))
        comp_paths.append(paths)
    if comp_types[0] != "token":
        raise Skip("first component is a %s (only token first components are indexed)" %
                   comp_types[0])
    p.paths = [bp for bp, _ctx in base_paths] + comp_paths[0] + comp_paths[1]
    p.n_base = len(base_paths)
    p.n_c1 = len(comp_paths[0])
    p.c1_type, p.c2_type = comp_types


def compartment(cd, params):
    out = {}
    warnings = []
    for r in cd.get("resource", []):
        codes = r.get("param")
        if not codes:
            continue
        for c in codes:
            if (r["code"], c) not in params and ("Resource", c) not in params:
                warnings.append("compartment: %s?%s is not a generated parameter" % (r["code"], c))
        out[r["code"]] = list(codes)
    return out, warnings


# ---------------------------------------------------------------------------------------------
# Output


def c_str(s):
    if s is None:
        return "NULL"
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        else:
            for b in ch.encode("utf-8"):
                out.append("\\%03o" % b)
    out.append('"')
    return "".join(out)


def emit(model, params, compart):
    common_types = ("Resource", "DomainResource")
    types = sorted(set(model.concrete) | set(common_types))
    defs = sorted(params.values(), key=lambda p: (p.rtype.encode(), p.code.encode()))
    def_index = {id(p): i for i, p in enumerate(defs)}

    lines = []
    w = lines.append
    w("/* search_gen.c - generated by tools/gen_search.py from hl7.fhir.r4.examples 4.0.1. Do not")
    w(" * edit. The search parameters of every resource type and their compiled extraction paths. */")
    w('#include "fhir/searchparam_int.h"')
    w("")
    w("/* clang-format off */")
    w("")

    # NULL-terminated string lists (targets, components, compartments), shared when equal.
    lists = {}

    def strlist(items):
        if not items:
            return "NULL"
        key = tuple(items)
        if key not in lists:
            lists[key] = "L%d" % len(lists)
        return lists[key]

    # Steps and paths.
    steps, step_index = [], {}
    paths = []
    def_rows = []
    for p in defs:
        first_path = len(paths)
        for path in p.paths:
            key = tuple(path.steps)
            if key not in step_index:
                step_index[key] = len(steps)
                steps.extend(path.steps)
            fs = step_index[key] if path.steps else 0
            paths.append((fs, len(path.steps), path.vtype, path.target, path.system))
        def_rows.append((p, first_path, len(p.paths)))
    if any(len(p.paths) > 255 for p in defs):
        raise GenError("a parameter with more than 255 paths")
    if len(steps) > MAX_U16 or len(paths) > MAX_U16 or len(defs) > MAX_U16:
        raise GenError("tables too large for 16-bit links")

    body = []
    b = body.append
    b("const struct jk_sp_step jk_sp_gen_steps[JK_SP_GEN_N_STEPS] = {")
    for name, wk, we, wv in steps:
        b("    {%s, %s, %s, %d}," % (c_str(name), c_str(we), c_str(wv), wk))
    b("};")
    b("")
    b("const struct jk_sp_path jk_sp_gen_paths[JK_SP_GEN_N_PATHS] = {")
    for fs, ns, vt, target, system in paths:
        b("    {%d, %d, JK_SPV_%s, %s, %s}," % (fs, ns, vt, c_str(target), c_str(system)))
    b("};")
    b("")
    b("const struct jk_sp_def jk_sp_gen_defs[JK_SP_GEN_N_DEFS] = {")
    for p, fp, np_ in def_rows:
        tl = strlist(p.targets)
        cl = strlist(p.components)
        c1 = SP_TYPES[p.c1_type] if p.c1_type else "0"
        c2 = SP_TYPES[p.c2_type] if p.c2_type else "0"
        b("    {{%s, %s, %s, %s, %s}, %s, %d, %d, %d, %d, %s, %s, %d}," % (
            c_str(p.code), c_str(p.rtype), SP_TYPES[p.sptype], tl, cl, c_str(p.aux), fp, np_,
            p.n_base, p.n_c1, c1, c2, 1 if p.code in NO_ROWS else 0))
    b("};")
    b("")
    # Per type: pointers to its parameters and the common ones, sorted by code.
    common = {}
    for ct in common_types:
        for p in defs:
            if p.rtype == ct:
                common[p.code] = p
    ptrs = []
    type_rows = []
    entries = []  # per type: (first step name, def index, path index), for extract.c
    for t in types:
        mine = {p.code: p for p in defs if p.rtype == t}
        allp = dict(common) if t not in common_types or t == "DomainResource" else {}
        if t == "Resource":
            allp = {c: p for c, p in common.items() if p.rtype == "Resource"}
        allp.update(mine)
        first = len(ptrs)
        for code in sorted(allp, key=lambda s: s.encode()):
            ptrs.append(def_index[id(allp[code])])
        n_own = len(mine)
        # The paths that start at the resource root, keyed by their first member name, so
        # that extraction looks up only the members a resource has. Root paths (no step:
        # a composite whose base is the resource itself, the deceased special) sort first.
        mine_e = []
        for p in allp.values():
            di = def_index[id(p)]
            _p, fp, np_ = def_rows[di]
            n_top = p.n_base if p.sptype == "composite" else np_
            for k in range(n_top):
                path = p.paths[k]
                name = path.steps[0][0] if path.steps else ""
                mine_e.append((name.encode(), di, fp + k))
        mine_e.sort()
        first_e = len(entries)
        entries.extend(mine_e)
        n_root = sum(1 for e in mine_e if e[0] == b"")
        type_rows.append((t, first, len(ptrs) - first, n_own, compart.get(t), first_e,
                          len(mine_e), n_root))
    b("const size_t jk_sp_gen_n_defs = JK_SP_GEN_N_DEFS;")
    b("")
    b("const struct jk_sp *const jk_sp_gen_lists[JK_SP_GEN_N_LIST] = {")
    for i in ptrs:
        b("    &jk_sp_gen_defs[%d].sp," % i)
    b("};")
    b("")
    if len(entries) > MAX_U16:
        raise GenError("too many path entries for 16-bit links")
    b("const struct jk_sp_gen_entry jk_sp_gen_entries[JK_SP_GEN_N_ENTRIES] = {")
    for name, di, pi in entries:
        b("    {%s, %d, %d}," % (c_str(name.decode()), di, pi))
    b("};")
    b("")
    b("const struct jk_sp_gen_type jk_sp_gen_types[JK_SP_GEN_N_TYPES] = {")
    for t, first, n, _n_own, comp, first_e, n_e, n_root in type_rows:
        b("    {%s, %d, %d, %s, %d, %d, %d}," % (c_str(t), first, n, strlist(comp), first_e, n_e,
                                                n_root))
    b("};")
    b("")
    b("const size_t jk_sp_gen_n_types = JK_SP_GEN_N_TYPES;")
    b("")

    for key, name in sorted(lists.items(), key=lambda kv: int(kv[1][1:])):
        w("static const char *const %s[] = {%s, NULL};" % (name, ", ".join(c_str(s) for s in key)))
    w("")
    lines.extend(body)
    lines.append("/* clang-format on */")
    lines.append("")
    text = "\n".join(lines)
    # The sizes go in searchparam_int.h's extern declarations through these macros.
    sizes = (len(steps), len(paths), len(defs), len(ptrs), len(types), len(entries))
    header = ("#define JK_SP_GEN_N_STEPS %d\n#define JK_SP_GEN_N_PATHS %d\n#define JK_SP_GEN_N_DEFS %d\n"
              "#define JK_SP_GEN_N_LIST %d\n#define JK_SP_GEN_N_TYPES %d\n"
              "#define JK_SP_GEN_N_ENTRIES %d\n" % sizes)
    text = text.replace('#include "fhir/searchparam_int.h"\n',
                        '#include "fhir/searchparam_int.h"\n\n' + header, 1)
    return text, type_rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the committed generated file is out of date")
    ap.add_argument("--report", action="store_true",
                    help="print counts per type and every skipped expression")
    ap.add_argument("--package", default=PKG, help="folder of the unpacked R4 package")
    args = ap.parse_args()
    try:
        model, sps, by_url, cd = load(args.package)
        params, skipped, added = build(model, sps, by_url)
        compart, warnings = compartment(cd, params)
        if warnings:
            raise GenError("; ".join(warnings))
        text, type_rows = emit(model, params, compart)
    except (GenError, gen_fhir.GenError) as e:
        print("gen_search: %s" % e, file=sys.stderr)
        return 2
    if args.report:
        n_paths = sum(len(p.paths) for p in params.values())
        print("search parameters %d (in %d SearchParameter resources), paths %d, skipped %d" % (
            len(params), len(sps), n_paths, len(skipped)))
        for row in type_rows:
            t, n, n_own = row[0], row[2], row[3]
            print("type %s %d own, %d with the common ones" % (t, n_own, n))
        for rt in added:
            print("added %s?identifier (not in R4: for conditional operations)" % rt)
        for sid, rt, expr, why in skipped:
            print("skipped %s [%s] %s: %s" % (sid, rt, expr, why))
        for p in sorted(params.values(), key=lambda p: (p.rtype, p.code)):
            for ft, where in p.dropped:
                print("dropped %s?%s: %s value at %s" % (p.rtype, p.code, ft, where))
    if args.check:
        try:
            with open(OUT_C, encoding="utf-8") as f:
                if f.read() == text:
                    return 0
        except OSError:
            pass
        print("gen_search: %s out of date; run python3 tools/gen_search.py" %
              os.path.relpath(OUT_C, ROOT), file=sys.stderr)
        return 1
    with open(OUT_C, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
