//! Network shapes for the fault phases: the groups of a split, and the
//! topologies a full mesh never shows — chains, rings, stars, random graphs
//! with missing links, links that pass one way only.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// The directions `(from, to)` that pass.
pub(super) type Passing = BTreeSet<(usize, usize)>;

/// A shape of the network, with a name for the script.
pub(super) struct Shape {
    pub name: String,
    pub passing: Passing,
}

fn link(passing: &mut Passing, a: usize, b: usize) {
    passing.insert((a, b));
    passing.insert((b, a));
}

/// Every direction passes.
pub(super) fn full(n: usize) -> Passing {
    groups(&[(0..n).collect()])
}

/// Every direction within a group passes; none between groups.
pub(super) fn groups(groups: &[Vec<usize>]) -> Passing {
    let mut passing = Passing::new();
    for group in groups {
        for &a in group {
            for &b in group {
                if a != b {
                    passing.insert((a, b));
                }
            }
        }
    }
    passing
}

/// `0..n` shuffled and cut into `k` non-empty groups.
pub(super) fn partition(rng: &mut StdRng, n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut all: Vec<usize> = (0..n).collect();
    all.shuffle(rng);
    let mut cuts: Vec<usize> = (1..n).collect();
    cuts.shuffle(rng);
    let mut cuts: Vec<usize> = cuts.into_iter().take(k - 1).collect();
    cuts.sort_unstable();
    let mut groups = Vec::with_capacity(k);
    let mut from = 0;
    for cut in cuts.into_iter().chain(std::iter::once(n)) {
        groups.push(all[from..cut].to_vec());
        from = cut;
    }
    groups
}

/// A chain, a ring, a star or a random graph over `0..n` in random order,
/// sometimes with a link or two that passes one way only (a one-way link
/// kills its connection: heartbeats stop arriving at one end).
pub(super) fn random_shape(rng: &mut StdRng, n: usize) -> Shape {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut passing = Passing::new();
    let mut name = match rng.random_range(0..4) {
        0 => {
            for pair in order.windows(2) {
                link(&mut passing, pair[0], pair[1]);
            }
            format!("chain {order:?}")
        }
        1 => {
            for pair in order.windows(2) {
                link(&mut passing, pair[0], pair[1]);
            }
            link(&mut passing, order[n - 1], order[0]);
            format!("ring {order:?}")
        }
        2 => {
            for &leaf in &order[1..] {
                link(&mut passing, order[0], leaf);
            }
            format!("star around {}", order[0])
        }
        _ => {
            let p: f64 = rng.random_range(0.3..0.8);
            let mut links = Vec::new();
            for a in 0..n {
                for b in a + 1..n {
                    if rng.random_bool(p) {
                        link(&mut passing, a, b);
                        links.push((a, b));
                    }
                }
            }
            format!("random graph {links:?}")
        }
    };
    for _ in 0..rng.random_range(0..=2) {
        let a = rng.random_range(0..n);
        let b = (a + rng.random_range(1..n)) % n;
        passing.insert((a, b));
        passing.remove(&(b, a));
        name += &format!(", one way {a} -> {b}");
    }
    Shape { name, passing }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_partition_uses_every_node_once_in_non_empty_groups() {
        let mut rng = StdRng::seed_from_u64(3);
        for k in 1..=5 {
            let groups = partition(&mut rng, 5, k);
            assert_eq!(groups.len(), k);
            assert!(groups.iter().all(|g| !g.is_empty()));
            let mut all: Vec<usize> = groups.concat();
            all.sort_unstable();
            assert_eq!(all, vec![0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn groups_pass_within_and_never_between() {
        let passing = groups(&[vec![0, 2], vec![1]]);
        assert!(passing.contains(&(0, 2)) && passing.contains(&(2, 0)));
        assert!(!passing.contains(&(0, 1)) && !passing.contains(&(1, 2)));
    }
}
