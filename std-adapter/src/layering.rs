//! Keeps the crate's module graph one way and its libc calls in `sys/`.
//!
//! Reads the sources (every `.rs` under `src/`, so a new file is checked
//! without being listed) and looks at each `crate::` path outside comments.

use std::path::{Path, PathBuf};

/// The layers, lowest first: a module may use only modules of a lower
/// layer (and itself). `lib.rs` sits on top of all of them.
const LAYERS: &[&[&str]] = &[
    &["sys"],
    &["addr", "shutdown"],
    &["error", "replies"],
    &["activation", "conn"],
    &["source", "writer"],
    &["socket"],
    &["dispatch"],
    &["server"],
    &["event"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `.rs` file under `dir`, with its top-level module's name.
fn sources(dir: &Path, top: Option<&str>, out: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let module = top.map_or_else(|| stem.clone(), str::to_owned);
        if path.is_dir() {
            sources(&path, Some(&module), out);
        } else if path.extension().is_some_and(|e| e == "rs") && stem != "lib" && stem != "layering"
        {
            out.push((module, path));
        }
    }
}

/// The code lines of a file: comments (and doc comments, whose links name
/// items of any layer) left out.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.split(" //").next().unwrap_or("").to_owned()))
        .collect()
}

/// The module names each `crate::` path of `line` starts with.
fn crate_paths(line: &str) -> Vec<String> {
    line.match_indices("crate::")
        .filter(|(i, _)| !line[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(i, m)| {
            let rest = &line[i + m.len()..];
            rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '{').collect()
        })
        .collect()
}

fn all_sources() -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), None, &mut files);
    assert!(files.len() > 20, "found the sources: {files:?}");
    files
}

#[test]
fn the_module_graph_goes_one_way() {
    let mut wrong = Vec::new();
    for (module, path) in all_sources() {
        let Some(own) = layer(&module) else {
            wrong.push(format!("{}: module {module} has no layer in LAYERS", path.display()));
            continue;
        };
        for (n, line) in code_lines(&path) {
            for target in crate_paths(&line) {
                let ok = target == module || layer(&target).is_some_and(|t| t < own);
                if !ok {
                    let why = match layer(&target) {
                        Some(_) => "a layer above or beside it",
                        None => "a root path (name the module)",
                    };
                    wrong.push(format!(
                        "{}:{n}: {module} uses crate::{target}: {why}",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn libc_is_used_only_in_sys() {
    let mut wrong = Vec::new();
    for (module, path) in all_sources() {
        if module == "sys" {
            continue;
        }
        for (n, line) in code_lines(&path) {
            if line.contains("libc::") || line.contains("use libc") {
                wrong.push(format!("{}:{n}: {}", path.display(), line.trim()));
            }
        }
    }
    assert!(wrong.is_empty(), "libc outside sys/:\n{}", wrong.join("\n"));
}

#[test]
fn the_checks_see_what_they_look_for() {
    assert_eq!(crate_paths("use crate::socket::{A, B}; x(crate::sys::f)"), ["socket", "sys"]);
    assert_eq!(crate_paths("use sockserv_crate::x;"), Vec::<String>::new());
    assert!(layer("sys") < layer("event"));
}
