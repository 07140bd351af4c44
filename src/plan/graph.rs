//! The stage graph: which stages each stage needs, cycle detection,
//! reachability from the target and a dependency-first order.

use crate::dockerfile::diag::Diagnostic;
use crate::dockerfile::diag::Pos;
use std::collections::BTreeSet;

/// One edge source: stage `to` is needed by the stage that owns the edge,
/// because of the instruction at `pos`.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    pub to: usize,
    pub pos: Pos,
}

/// Checks for cycles. `names[i]` names stage `i` in the error.
pub fn check_cycles(edges: &[Vec<Edge>], names: &[String]) -> Result<(), Diagnostic> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; edges.len()];
    for start in 0..edges.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge index).
        let mut stack = vec![(start, 0usize)];
        marks[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(edge) = edges[node].get(*next) {
                *next += 1;
                match marks.get(edge.to).copied() {
                    Some(Mark::Active) => {
                        let name = names.get(edge.to).cloned().unwrap_or_default();
                        return Err(Diagnostic::error(
                            edge.pos,
                            format!("circular dependency detected on stage: {name}"),
                        ));
                    }
                    Some(Mark::New) => {
                        marks[edge.to] = Mark::Active;
                        stack.push((edge.to, 0));
                    }
                    _ => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    Ok(())
}

/// Stages reachable from `target`, and an order in which each comes after
/// everything it needs (ties broken by Dockerfile order). Assumes no cycles.
pub fn reachable_order(edges: &[Vec<Edge>], target: usize) -> (BTreeSet<usize>, Vec<usize>) {
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(n) = todo.pop() {
        if n < edges.len() && seen.insert(n) {
            todo.extend(edges[n].iter().map(|e| e.to));
        }
    }
    let mut order = Vec::new();
    let mut placed = BTreeSet::new();
    while order.len() < seen.len() {
        let before = order.len();
        for &n in &seen {
            if !placed.contains(&n) && edges[n].iter().all(|e| placed.contains(&e.to)) {
                placed.insert(n);
                order.push(n);
                break;
            }
        }
        if order.len() == before {
            break;
        }
    }
    (seen, order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(to: usize) -> Edge {
        Edge {
            to,
            pos: Pos::default(),
        }
    }

    #[test]
    fn order_and_pruning() {
        // 0 <- 1 <- 3, 2 unreachable
        let edges = vec![vec![], vec![e(0)], vec![e(0)], vec![e(1)]];
        let (seen, order) = reachable_order(&edges, 3);
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1, 3]);
        assert_eq!(order, vec![0, 1, 3]);
    }

    #[test]
    fn cycles_are_found() {
        let names: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let edges = vec![vec![e(1)], vec![e(0)]];
        let err = check_cycles(&edges, &names).unwrap_err();
        assert!(err.message.contains("circular dependency"));
        assert!(check_cycles(&[vec![], vec![e(0)]], &names).is_ok());
    }
}
