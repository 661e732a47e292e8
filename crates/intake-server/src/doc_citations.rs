//! The tests the documentation cites exist: every `path.rs::test_name` in docs/*.md and the
//! README (and each `::other_test` after it) names a file of the repository that defines
//! that function. A test renamed or moved fails here instead of leaving the threat model
//! (docs/security.md) pointing at nothing.

use std::path::Path;

/// Every file under `dir`, as a path relative to `root` with `/` separators.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        if name == "target" || name == "node_modules" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The inline code spans of `text`, outside fenced blocks.
fn spans(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.extend(line.split('`').skip(1).step_by(2));
        }
    }
    out
}

fn is_ident(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `path.rs` or `path.rs::name`, when `span` is one.
fn citation(span: &str) -> Option<(&str, Option<&str>)> {
    let (path, name) = match span.split_once("::") {
        Some((p, n)) => (p, Some(n)),
        None => (span, None),
    };
    let is_path = [".rs", ".mjs", ".js", ".sh"]
        .iter()
        .any(|x| path.ends_with(x))
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c));
    (is_path && name.is_none_or(is_ident)).then_some((path, name))
}

/// The repository files `path` may mean: `e2e/…` is the server's end-to-end tests, a crate
/// path may leave out `crates/`, and a shorter path is any file ending with it.
fn resolve(files: &[String], path: &str) -> Vec<String> {
    let exact = [
        path.strip_prefix("e2e/")
            .map(|p| format!("crates/intake-server/tests/e2e/{p}")),
        Some(format!("crates/{path}")),
        Some(path.to_string()),
    ];
    for candidate in exact.into_iter().flatten() {
        if files.contains(&candidate) {
            return vec![candidate];
        }
    }
    let tail = format!("/{path}");
    files
        .iter()
        .filter(|f| f.ends_with(&tail))
        .cloned()
        .collect()
}

fn defines(root: &Path, files: &[String], name: &str) -> bool {
    let want = format!("fn {name}");
    files.iter().any(|f| {
        let text = std::fs::read_to_string(root.join(f)).unwrap_or_default();
        text.match_indices(&want)
            .any(|(i, _)| text[i + want.len()..].starts_with(['(', '<']))
    })
}

#[test]
fn every_test_the_docs_cite_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.push(root.join("README.md"));
    let mut missing = Vec::new();
    let mut cited = 0;
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        let doc = doc.file_name().unwrap().to_string_lossy().into_owned();
        let mut last: Vec<String> = Vec::new();
        for span in spans(&text) {
            let name = if let Some((path, name)) = citation(span) {
                last = resolve(&files, path);
                if last.is_empty() {
                    missing.push(format!("{doc}: {span}: no such file"));
                }
                name
            } else if let Some(name) = span.strip_prefix("::").filter(|n| is_ident(n)) {
                Some(name)
            } else {
                continue;
            };
            if let Some(name) = name.filter(|_| !last.is_empty()) {
                cited += 1;
                if !defines(&root, &last, name) {
                    missing.push(format!("{doc}: {span}: no fn {name} in {last:?}"));
                }
            }
        }
    }
    assert!(cited > 50, "the docs cite their tests ({cited} found)");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
