//! The core's modules form no import circle (ARCHITECTURE.md, core/): each module's imports of
//! its siblings, read from the sources, are a graph without a cycle, so a module can be read and
//! tested on top of the ones below it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Each module of `src/` and the sibling modules it names as `crate::<module>`.
fn imports() -> BTreeMap<String, Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in fs::read_dir(&src).expect("core/src is readable") {
        let path = entry.expect("a directory entry").path();
        let Some(module) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        if module == "lib" || path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("a readable source");
        let mut deps: Vec<String> = text
            .match_indices("crate::")
            .map(|(at, _)| {
                text[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect::<String>()
            })
            .filter(|dep| !dep.is_empty() && *dep != module)
            .collect();
        deps.sort();
        deps.dedup();
        graph.insert(module, deps);
    }
    graph
}

#[test]
fn the_core_modules_import_each_other_without_a_cycle() {
    let graph = imports();
    assert!(graph.contains_key("tier") && graph.contains_key("write"), "{graph:?}");
    // Depth-first search; `path` holds the modules being visited.
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, Vec<String>>,
        path: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
    ) {
        if done.contains(&module) {
            return;
        }
        if let Some(at) = path.iter().position(|m| *m == module) {
            panic!("import circle: {} -> {module}", path[at..].join(" -> "));
        }
        path.push(module);
        for dep in graph.get(module).into_iter().flatten() {
            visit(dep, graph, path, done);
        }
        path.pop();
        done.push(module);
    }
    let mut done = Vec::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
    // The tier index names tiers for every machine and depends on none of them.
    assert_eq!(graph["tier"], Vec::<String>::new());
}
