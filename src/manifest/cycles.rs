//! Dependency cycles among the steps of the fleets (`dependsOn`), each found once, for
//! manifest validation to report.

use std::collections::{BTreeMap, BTreeSet};

/// Elementary cycles of the dependency graph, each reported once: rotated to start at its
/// smallest step, found by depth-first search from each step in order.
pub(super) fn find_cycles<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<Vec<&'a str>> {
    let mut found: BTreeSet<Vec<&str>> = BTreeSet::new();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    let mut path: Vec<&str> = Vec::new();
    fn dfs<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
        found: &mut BTreeSet<Vec<&'a str>>,
    ) {
        state.insert(node, 1);
        path.push(node);
        for &next in graph.get(node).map(Vec::as_slice).unwrap_or(&[]) {
            match state.get(next).copied().unwrap_or(0) {
                0 => dfs(next, graph, state, path, found),
                1 => {
                    let start = path.iter().position(|s| *s == next).expect("on path");
                    let mut cycle = path[start..].to_vec();
                    let min = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| **s)
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    cycle.rotate_left(min);
                    found.insert(cycle);
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node, 2);
    }
    for &node in graph.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            dfs(node, graph, &mut state, &mut path, &mut found);
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_found_once() {
        let mut g: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        g.insert("a", vec!["b"]);
        g.insert("b", vec!["c"]);
        g.insert("c", vec!["a"]);
        g.insert("d", vec!["a"]);
        assert_eq!(find_cycles(&g), vec![vec!["a", "b", "c"]]);
        g.insert("c", vec![]);
        assert!(find_cycles(&g).is_empty());
    }
}
