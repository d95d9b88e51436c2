//! `cargo xtask modules`: the import graph of `ftpd-user`'s modules, and the
//! check (a stage of `cargo xtask test`) that it has no cycle.
//!
//! Why not `cargo-modules`: it embeds rust-analyzer, a few hundred crates and
//! about a quarter of an hour of building on a two-core CI machine, to answer a
//! question that `syn` answers in a fraction of a second. What counts as an
//! import is any path that names another module of the crate: `use` items and
//! paths written in code (`crate::rates::Rates::new()`, `super::files::x`),
//! in tests too, since a test module that reaches up a layer ties the layers
//! together just the same. A module may always name its ancestors (the
//! `mod` tree is not an import).
//!
//! Handlers are methods on `Session`, so one handler file can use another
//! through `self.helper()` without naming its module: the check also fails
//! on a method call to a method that only an `impl Session` of a
//! `commands::*` file defines, from any other file (another handler, or the
//! session layer below them). What handlers share belongs to the session
//! layer; `commands::dispatch` may call the handlers (`cmd_*`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use syn::visit::Visit;

use crate::workspace_root;

/// One module of the crate: its path (`commands::files`) and its file.
type Graph = BTreeMap<String, BTreeMap<String, Vec<Site>>>;

/// Where one module names another, for the error message.
#[derive(Clone)]
struct Site {
    file: PathBuf,
    line: usize,
}

/// Prints the module map bottom-up, or fails naming the cycles.
pub(crate) fn run(check_only: bool) -> Result<()> {
    let src = workspace_root().join("ftpd-user").join("src");
    let graph = graph(&src)?;
    let cycles = cycles(&graph);
    if !cycles.is_empty() {
        let mut msg = String::new();
        for c in &cycles {
            let _ = writeln!(msg, "import cycle among {} modules: {}", c.len(), c.join(", "));
            for from in c {
                for (to, sites) in &graph[from] {
                    if c.contains(to) {
                        let s = &sites[0];
                        let rel = s.file.strip_prefix(workspace_root()).unwrap_or(&s.file);
                        let _ = writeln!(msg, "  {from} -> {to}  ({}:{})", rel.display(), s.line);
                    }
                }
            }
        }
        bail!("{msg}each module may import only modules below it (docs/ARCHITECTURE.md, module map)");
    }
    check_map(&graph)?;
    let crossings = handler_crossings(&sources(&src)?)?;
    if !crossings.is_empty() {
        bail!(
            "{}\nhandlers call each other only through the session layer (docs/ARCHITECTURE.md, module map)",
            crossings.join("\n")
        );
    }
    let levels = levels(&graph);
    if check_only {
        println!("no import cycle among the {} modules of ftpd-user ({} layers)", graph.len(), levels.len());
        return Ok(());
    }
    for (n, layer) in levels.iter().enumerate() {
        for m in layer {
            let deps: Vec<&str> = graph[m].keys().map(String::as_str).collect();
            println!("{n:>2}  {m:<22} uses: {}", if deps.is_empty() { "-".into() } else { deps.join(", ") });
        }
    }
    Ok(())
}

/// The module map of docs/ARCHITECTURE.md: every module of the crate on one
/// row, bottom-up, each using only modules on rows above it.
fn check_map(graph: &Graph) -> Result<()> {
    let path = workspace_root().join("docs").join("ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let rows = map_rows(&text);
    let row: BTreeMap<&str, usize> = rows.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let mut problems = Vec::new();
    for m in graph.keys() {
        if !row.contains_key(m.as_str()) {
            problems.push(format!("`{m}` is missing from the module map"));
        }
    }
    for m in &rows {
        if !graph.contains_key(m) {
            problems.push(format!("`{m}` is in the module map but not in ftpd-user/src"));
        }
    }
    for (from, deps) in graph {
        for to in deps.keys() {
            if let (Some(&f), Some(&t)) = (row.get(from.as_str()), row.get(to.as_str()))
                && t > f
            {
                problems.push(format!("`{from}` uses `{to}`, which the module map puts below it"));
            }
        }
    }
    if !problems.is_empty() {
        bail!("docs/ARCHITECTURE.md, \"Module map\":\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// The module names of the map's table rows (`| layer | `module` | ... |`), in order.
fn map_rows(text: &str) -> Vec<String> {
    let Some(start) = text.find("## Module map") else { return Vec::new() };
    let section = &text[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    section[..end]
        .lines()
        .filter_map(|l| l.strip_prefix('|')?.split('|').nth(1))
        .filter_map(|cell| cell.trim().strip_prefix('`')?.strip_suffix('`').map(str::to_owned))
        .collect()
}

/// Every module file of the crate: module path, file, text.
fn sources(src: &Path) -> Result<Vec<(String, PathBuf, String)>> {
    modules(src)?
        .into_iter()
        .map(|(m, f)| {
            let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            Ok((m, f, text))
        })
        .collect()
}

/// Calls `self.m(..)` in one module to a method `m` that only an `impl
/// Session` of a handler file (`commands::*`) defines, from anywhere but
/// that file, one line each: from another handler, or from below.
fn handler_crossings(files: &[(String, PathBuf, String)]) -> Result<Vec<String>> {
    let mut asts = Vec::new();
    let mut defined: BTreeMap<String, Vec<(String, PathBuf, usize)>> = BTreeMap::new();
    for (module, file, text) in files {
        let ast = syn::parse_file(text).with_context(|| format!("parsing {}", file.display()))?;
        for item in ast.items.iter().filter(|_| module.starts_with("commands::")) {
            let syn::Item::Impl(imp) = item else { continue };
            let syn::Type::Path(ty) = &*imp.self_ty else { continue };
            if imp.trait_.is_some() || ty.path.segments.last().is_none_or(|s| s.ident != "Session") {
                continue;
            }
            for it in &imp.items {
                if let syn::ImplItem::Fn(f) = it {
                    let line = f.sig.ident.span().start().line;
                    defined.entry(f.sig.ident.to_string()).or_default().push((module.clone(), file.clone(), line));
                }
            }
        }
        asts.push((module, file, ast));
    }
    let rel = |p: &Path| p.strip_prefix(workspace_root()).unwrap_or(p).display().to_string();
    let mut out = Vec::new();
    for (module, file, ast) in asts {
        let mut calls = SelfCalls(Vec::new());
        calls.visit_file(&ast);
        for (method, line) in calls.0 {
            let Some(sites) = defined.get(&method) else { continue };
            if sites.iter().any(|(m, _, _)| m == module) {
                continue;
            }
            if module == "commands::dispatch" && method.starts_with("cmd_") {
                continue;
            }
            let (to, to_file, to_line) = &sites[0];
            out.push(format!(
                "{module} calls `self.{method}()` ({}:{line}), a method of {to} ({}:{to_line})",
                rel(file),
                rel(to_file)
            ));
        }
    }
    out.dedup();
    Ok(out)
}

/// Method calls on `self`, with their lines.
struct SelfCalls(Vec<(String, usize)>);

impl<'ast> Visit<'ast> for SelfCalls {
    fn visit_expr_method_call(&mut self, c: &'ast syn::ExprMethodCall) {
        if let syn::Expr::Path(p) = &*c.receiver
            && p.path.is_ident("self")
        {
            self.0.push((c.method.to_string(), c.method.span().start().line));
        }
        syn::visit::visit_expr_method_call(self, c);
    }
}

/// Every module of the crate under `src`, by path (`commands::files`), and its file.
fn modules(src: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut files = Vec::new();
    walk(src, &mut files)?;
    let mut modules = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(src).expect("walked below src").with_extension("");
        let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        // The crate roots declare modules; they are not layers of their own.
        if parts == ["lib"] || parts == ["main"] || parts.first().is_some_and(|p| p == "bin") {
            continue;
        }
        modules.insert(parts.join("::"), f.clone());
    }
    Ok(modules)
}

/// Reads every module file under `src` and collects the modules it names.
fn graph(src: &Path) -> Result<Graph> {
    let modules = modules(src)?;
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut graph = Graph::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        let mut v = Names { here: module.split("::").map(str::to_owned).collect(), inline: 0, found: Vec::new() };
        v.visit_file(&ast);
        let edges = graph.entry(module.clone()).or_default();
        for (path, line) in v.found {
            let Some(target) = resolve(&names, &path) else { continue };
            let is_ancestor = module == &target || module.starts_with(&format!("{target}::"));
            if !is_ancestor {
                edges.entry(target).or_default().push(Site { file: file.clone(), line });
            }
        }
    }
    Ok(graph)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// The longest prefix of an absolute path that is a module of the crate.
fn resolve(names: &BTreeSet<String>, path: &[String]) -> Option<String> {
    (1..=path.len()).rev().map(|k| path[..k].join("::")).find(|m| names.contains(m))
}

/// Collects the absolute module paths named in one file.
struct Names {
    /// The file's module path, then any inline modules (`mod tests`) entered.
    here: Vec<String>,
    inline: usize,
    found: Vec<(Vec<String>, usize)>,
}

impl Names {
    /// Makes `segments` absolute (`crate::`, `super::`, `self::`); paths
    /// that start anywhere else name an external crate, a local item or a
    /// prelude name and are no import of a sibling module.
    fn absolute(&self, segments: &[String]) -> Option<Vec<String>> {
        let mut base = self.here.clone();
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            _ => return None,
        }
        // Inline modules are part of their file's module for layering.
        base.truncate(base.len().min(self.here.len() - self.inline));
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn record(&mut self, segments: &[String], line: usize) {
        if let Some(p) = self.absolute(segments) {
            self.found.push((p, line));
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            // `use crate::fs::{self, VPath}`: `self` is the prefix itself.
            syn::UseTree::Name(n) if n.ident == "self" => {
                self.record(&prefix.clone(), n.ident.span().start().line);
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.record(&prefix.clone(), n.ident.span().start().line);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.record(&prefix.clone(), r.ident.span().start().line);
                prefix.pop();
            }
            syn::UseTree::Glob(g) => {
                self.record(&prefix.clone(), g.star_token.spans[0].start().line);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Names {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(first) = p.segments.first() {
            self.record(&segments, first.ident.span().start().line);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_attribute(&mut self, a: &'ast syn::Attribute) {
        // `#[serde(with = "crate::ipc::wire_stat")]` and its kin name a
        // module inside a string: read string literals that hold a path.
        if let syn::Meta::List(list) = &a.meta {
            for t in flatten(list.tokens.clone()) {
                if let proc_macro2::TokenTree::Literal(l) = &t
                    && let Ok(syn::Lit::Str(s)) = syn::parse_str::<syn::Lit>(&l.to_string())
                    && let Ok(path) = syn::parse_str::<syn::Path>(&s.value())
                {
                    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
                    self.record(&segments, l.span().start().line);
                }
            }
        }
        syn::visit::visit_attribute(self, a);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.here.push(m.ident.to_string());
        self.inline += 1;
        syn::visit::visit_item_mod(self, m);
        self.inline -= 1;
        self.here.pop();
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // Paths inside macro calls (`tracing::info!(... crate::x::y ...)`,
        // `matches!`) are tokens, not a syntax tree: look for `crate::a::b`
        // and `super::a` sequences among them.
        let tokens: Vec<proc_macro2::TokenTree> = flatten(m.tokens.clone());
        let mut i = 0;
        while i < tokens.len() {
            if let proc_macro2::TokenTree::Ident(id) = &tokens[i] {
                let name = id.to_string();
                if name == "crate" || name == "super" || name == "self" {
                    let line = id.span().start().line;
                    let mut segs = vec![name];
                    let mut j = i + 1;
                    while is_colons(&tokens, j) {
                        match tokens.get(j + 2) {
                            Some(proc_macro2::TokenTree::Ident(next)) => segs.push(next.to_string()),
                            _ => break,
                        }
                        j += 3;
                    }
                    if segs.len() > 1 {
                        self.record(&segs, line);
                    }
                    i = j;
                    continue;
                }
            }
            i += 1;
        }
        syn::visit::visit_macro(self, m);
    }
}

/// Token trees with groups opened, in order.
fn flatten(ts: proc_macro2::TokenStream) -> Vec<proc_macro2::TokenTree> {
    let mut out = Vec::new();
    for t in ts {
        match t {
            proc_macro2::TokenTree::Group(g) => out.extend(flatten(g.stream())),
            other => out.push(other),
        }
    }
    out
}

fn is_colons(t: &[proc_macro2::TokenTree], j: usize) -> bool {
    matches!((t.get(j), t.get(j + 1)), (Some(proc_macro2::TokenTree::Punct(a)), Some(proc_macro2::TokenTree::Punct(b)))
        if a.as_char() == ':' && b.as_char() == ':')
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn strong<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g[v].keys() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                strong(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                t.out.push(c);
            }
        }
    }
    let mut t =
        T { g, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on: BTreeSet::new(), out: Vec::new() };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            strong(&mut t, v);
        }
    }
    t.out
}

/// Layers of an acyclic graph: a module's layer is one above the highest
/// module it uses, so layer 0 uses nothing of the crate.
fn levels(g: &Graph) -> Vec<Vec<String>> {
    fn level(g: &Graph, m: &str, memo: &mut BTreeMap<String, usize>) -> usize {
        if let Some(&l) = memo.get(m) {
            return l;
        }
        let l = g[m].keys().map(|d| level(g, d, memo) + 1).max().unwrap_or(0);
        memo.insert(m.to_owned(), l);
        l
    }
    let mut memo = BTreeMap::new();
    let mut out: Vec<Vec<String>> = Vec::new();
    for m in g.keys() {
        let l = level(g, m, &mut memo);
        if out.len() <= l {
            out.resize(l + 1, Vec::new());
        }
        out[l].push(m.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry((*a).into()).or_default().entry((*b).into()).or_default();
            g.entry((*b).into()).or_default();
        }
        g
    }

    #[test]
    fn finds_a_cycle_and_only_the_cycle() {
        let c = cycles(&g(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("e", "d")]));
        assert_eq!(c, vec![vec!["a".to_string(), "b".into(), "c".into()]]);
        assert!(cycles(&g(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    }

    #[test]
    fn map_rows_are_the_table_of_its_section() {
        let doc = "# x\n## Module map\n| layer | module | what |\n| --- | --- | --- |\n| a | `net` | x |\n| b | `commands::auth` | y |\n\n## Next\n| a | `other` | z |\n";
        assert_eq!(map_rows(doc), ["net", "commands::auth"]);
    }

    #[test]
    fn layers_go_bottom_up() {
        let l = levels(&g(&[("server", "session"), ("session", "config"), ("server", "config")]));
        assert_eq!(l, vec![vec!["config".to_string()], vec!["session".into()], vec!["server".into()]]);
    }

    #[test]
    fn a_handler_calling_another_handler_files_method_is_found() {
        let file = |m: &str, text: &str| (format!("commands::{m}"), PathBuf::from(format!("{m}.rs")), text.to_owned());
        let files = [
            file("files", "impl Session { fn may(&self) -> bool { true } pub fn cmd_dele(&mut self) { self.may(); } }"),
            file(
                "upload",
                "impl Session { fn cmd_stor(&mut self) { if self.may() { self.plan(); } } fn plan(&self) {} }",
            ),
            file("dispatch", "impl Session { fn run(&mut self) { self.cmd_stor(); self.cmd_dele(); self.may(); } }"),
            file("other", "impl Fs { fn may(&self) {} } fn f(s: &Session) { s.may(); }"),
            (
                "session".into(),
                "session.rs".into(),
                "impl Session { fn open(&self) { self.path(); self.may(); } }".into(),
            ),
        ];
        let found = handler_crossings(&files).unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with(
            "commands::upload calls `self.may()` (upload.rs:1), a method of commands::files (files.rs:1)"
        ));
        assert!(found[1].starts_with("commands::dispatch calls `self.may()`"), "{found:?}");
        assert!(found[2].starts_with("session calls `self.may()` (session.rs:1)"), "{found:?}");
    }

    #[test]
    fn names_in_use_items_code_macros_and_inline_modules() {
        let src = r#"
            use crate::{config::Config, fs::{self, VPath}};
            use super::files::helper;
            fn f() { crate::rates::Rates::new(); tracing::info!("{}", crate::metrics::X); }
            mod tests { use super::*; use super::super::data::y; }
            struct S { #[serde(with = "crate::ipc::wire")] x: u8 }
        "#;
        let ast = syn::parse_file(src).unwrap();
        let mut v = Names { here: vec!["commands".into(), "transfer".into()], inline: 0, found: Vec::new() };
        v.visit_file(&ast);
        let found: BTreeSet<String> = v.found.iter().map(|(p, _)| p.join("::")).collect();
        for want in [
            "config::Config",
            "fs",
            "fs::VPath",
            "commands::files::helper",
            "rates::Rates::new",
            "metrics::X",
            "commands::transfer",
            "commands::data::y",
            "ipc::wire",
        ] {
            assert!(found.contains(want), "{want} missing from {found:?}");
        }
    }
}
