//! The service dependency graph: edges from `depends_on`, `links`, `volumes_from` and
//! `network_mode: service:x`; start order as parallel levels, stop order as their reverse.

use std::collections::HashMap;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::compose::Project;

/// Errors building the graph.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    /// Services depend on each other in a loop.
    #[error("dependency cycle detected: {}", path.join(" -> "))]
    Cycle {
        /// The services on the cycle, with the first repeated at the end.
        path: Vec<String>,
    },
}

/// Services as nodes, with an edge from each service to every service it needs.
#[derive(Debug)]
pub struct ServiceGraph {
    graph: DiGraph<String, ()>,
}

impl ServiceGraph {
    /// Builds the graph of a loaded project.
    pub fn new(project: &Project) -> Result<ServiceGraph, GraphError> {
        let edges: Vec<(&str, &str)> = project
            .services
            .iter()
            .flat_map(|(name, svc)| svc.dependencies().into_iter().map(move |d| (name.as_str(), d)))
            .collect();
        Self::from_edges(project.services.keys().map(String::as_str), &edges)
    }

    /// Builds a graph from service names and `(dependant, dependency)` pairs.
    pub fn from_edges<'a>(
        names: impl IntoIterator<Item = &'a str>,
        edges: &[(&str, &str)],
    ) -> Result<ServiceGraph, GraphError> {
        let mut graph = DiGraph::new();
        let mut index: HashMap<String, NodeIndex> = HashMap::new();
        for n in names {
            let ix = graph.add_node(n.to_string());
            index.insert(n.to_string(), ix);
        }
        for (from, to) in edges {
            if let (Some(&a), Some(&b)) = (index.get(*from), index.get(*to)) {
                graph.update_edge(a, b, ());
            }
        }
        let g = ServiceGraph { graph };
        if let Some(path) = g.cycle() {
            return Err(GraphError::Cycle { path });
        }
        Ok(g)
    }

    fn cycle(&self) -> Option<Vec<String>> {
        // Iterative DFS with colours; reports the first back edge's loop in dependency direction.
        let n = self.graph.node_count();
        let mut colour = vec![0u8; n];
        for start in self.graph.node_indices() {
            if colour[start.index()] != 0 {
                continue;
            }
            let mut stack: Vec<(NodeIndex, Vec<NodeIndex>)> = vec![(start, self.graph.neighbors(start).collect())];
            let mut path = vec![start];
            colour[start.index()] = 1;
            while let Some((_, next)) = stack.last_mut() {
                match next.pop() {
                    Some(m) if colour[m.index()] == 1 => {
                        let pos = path.iter().position(|&p| p == m).unwrap_or(0);
                        let mut names: Vec<String> = path[pos..].iter().map(|&p| self.graph[p].clone()).collect();
                        names.push(self.graph[m].clone());
                        return Some(names);
                    }
                    Some(m) if colour[m.index()] == 0 => {
                        colour[m.index()] = 1;
                        path.push(m);
                        let nb = self.graph.neighbors(m).collect();
                        stack.push((m, nb));
                    }
                    Some(_) => {}
                    None => {
                        if let Some((done, _)) = stack.pop() {
                            colour[done.index()] = 2;
                            path.pop();
                        }
                    }
                }
            }
        }
        None
    }

    /// Start order: each level holds services whose dependencies are all in earlier levels.
    /// Services within a level can start in parallel. Names are sorted within a level.
    pub fn start_levels(&self) -> Vec<Vec<String>> {
        let mut remaining: Vec<usize> = self
            .graph
            .node_indices()
            .map(|i| self.graph.neighbors_directed(i, Direction::Outgoing).count())
            .collect();
        let mut ready: Vec<NodeIndex> = self
            .graph
            .node_indices()
            .filter(|i| remaining[i.index()] == 0)
            .collect();
        let mut levels = Vec::new();
        while !ready.is_empty() {
            let mut names: Vec<String> = ready.iter().map(|&i| self.graph[i].clone()).collect();
            names.sort();
            levels.push(names);
            let mut next = Vec::new();
            for &i in &ready {
                for dependant in self.graph.neighbors_directed(i, Direction::Incoming) {
                    remaining[dependant.index()] -= 1;
                    if remaining[dependant.index()] == 0 {
                        next.push(dependant);
                    }
                }
            }
            ready = next;
        }
        levels
    }

    /// Stop order: the start levels reversed, so dependants stop before what they depend on.
    pub fn stop_levels(&self) -> Vec<Vec<String>> {
        let mut levels = self.start_levels();
        levels.reverse();
        levels
    }
}

/// Finds a dependency cycle among `names` given `(dependant, dependency)` edges.
pub fn find_cycle<'a>(names: impl IntoIterator<Item = &'a str>, edges: &[(&str, &str)]) -> Option<Vec<String>> {
    match ServiceGraph::from_edges(names, edges) {
        Err(GraphError::Cycle { path }) => Some(path),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_dependencies() {
        let g = ServiceGraph::from_edges(
            ["web", "api", "db", "cache"],
            &[("web", "api"), ("api", "db"), ("api", "cache")],
        )
        .expect("acyclic");
        assert_eq!(g.start_levels(), vec![vec!["cache", "db"], vec!["api"], vec!["web"]]);
        assert_eq!(g.stop_levels(), vec![vec!["web"], vec!["api"], vec!["cache", "db"]]);
    }

    #[test]
    fn cycles_are_named() {
        let err = ServiceGraph::from_edges(["a", "b", "c"], &[("a", "b"), ("b", "c"), ("c", "a")]).unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle detected: a -> b -> c -> a");
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        assert_eq!(
            find_cycle(["a"], &[("a", "a")]),
            Some(vec!["a".to_string(), "a".to_string()])
        );
    }
}
