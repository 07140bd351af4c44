//! The stage graph: which stages each stage needs, and which stages the
//! target reaches. Edges always point to earlier stages (see `refs`), so
//! the graph is acyclic and Dockerfile order is a valid build order.

use crate::dockerfile::diag::Pos;
use std::collections::BTreeSet;

/// One dependency: the owning stage needs stage `to` because of the
/// instruction at `pos` (`what`: build from, copy from, mount from).
#[derive(Debug, Clone)]
pub struct Edge {
    pub to: usize,
    pub pos: Pos,
    /// The reference as written.
    pub value: String,
    pub what: &'static str,
    pub end_line: usize,
}

/// The stages reachable from `target`, target included.
pub fn reachable(edges: &[Vec<Edge>], target: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(n) = todo.pop() {
        if n < edges.len() && seen.insert(n) {
            todo.extend(edges[n].iter().map(|e| e.to));
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(to: usize) -> Edge {
        Edge {
            to,
            pos: Pos::default(),
            value: String::new(),
            what: "copy from",
            end_line: 0,
        }
    }

    #[test]
    fn reachability_prunes() {
        // 0 <- 1 <- 3, 2 unreachable; a forward edge does not loop forever.
        let edges = vec![vec![e(3)], vec![e(0)], vec![e(0)], vec![e(1)]];
        let seen: Vec<usize> = reachable(&edges, 3).into_iter().collect();
        assert_eq!(seen, vec![0, 1, 3]);
    }
}
