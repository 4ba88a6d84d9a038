//! PURE. The `uses` graph between skills: loops and nesting depth.
//!
//! Both are found in one pass over the skills and their `uses` steps
//! (Tarjan's strongly connected components, iterative so a long chain
//! cannot overflow the stack), so a directory of thousands of skills is
//! checked in time linear in its size. A chain nesting deeper than
//! [`MAX_USES_DEPTH`] is reported here, since every run of it would fail.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::model::{Action, Skill};
use super::snapshot::Resource;

/// `uses` may nest this deep: a job's `uses` step runs a skill at depth 1,
/// a `uses` step of that skill one at depth 2, and so on. The workflow
/// engine refuses to go deeper and validate rejects a chain that would.
pub const MAX_USES_DEPTH: usize = 10;

/// Names a chain shows in full; a longer one shows its first and last
/// names around an ellipsis.
const HEAD: usize = 4;
const TAIL: usize = 2;

/// One finding about a skill's `uses` step (`step` indexes its `steps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsesFinding {
    pub skill: String,
    pub step: usize,
    /// `uses-cycle` or `uses-depth`.
    pub code: &'static str,
    pub message: String,
}

/// Loops among skills (one finding per group of skills that use one
/// another) and chains deeper than [`MAX_USES_DEPTH`] (one finding at the
/// `uses` step that starts each). `uses` of unknown skills are ignored:
/// they are reported as missing references.
pub fn check(skills: &BTreeMap<String, Resource<Skill>>) -> Vec<UsesFinding> {
    let graph = Graph::new(skills);
    let mut findings = Vec::new();
    let (groups, reach) = graph.components();
    for group in &groups {
        findings.push(graph.cycle_finding(group));
    }
    findings.extend(graph.depth_findings(&reach));
    findings
}

/// Skills by index (in id order) and their `uses` edges.
struct Graph<'a> {
    ids: Vec<&'a str>,
    /// Per skill: (step index, target skill index), in step order.
    edges: Vec<Vec<(usize, usize)>>,
}

/// What a skill's `uses` reach, computed bottom-up.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reach {
    /// In a loop, or uses a skill that leads into one: no depth.
    Loops,
    /// The longest chain from here is `levels` skills (this one included),
    /// going on through `next` (None at the end) and ending at `last`.
    Chain {
        levels: usize,
        next: Option<(usize, usize)>,
        last: usize,
    },
}

impl<'a> Graph<'a> {
    fn new(skills: &'a BTreeMap<String, Resource<Skill>>) -> Self {
        let ids: Vec<&str> = skills.keys().map(String::as_str).collect();
        let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let edges = skills
            .values()
            .map(|skill| {
                skill
                    .spec
                    .steps
                    .iter()
                    .enumerate()
                    .filter_map(|(step, st)| match &st.action {
                        Action::Uses(target) => index.get(target.as_str()).map(|&t| (step, t)),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        Graph { ids, edges }
    }

    /// Tarjan's algorithm, iteratively. Returns the groups that loop and
    /// every skill's [`Reach`]: a component is finished only after every
    /// component it reaches, so each skill's reach is known from its
    /// targets' when its component completes.
    fn components(&self) -> (Vec<Vec<usize>>, Vec<Reach>) {
        const UNSEEN: usize = usize::MAX;
        let n = self.ids.len();
        let mut order = vec![UNSEEN; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack: Vec<usize> = Vec::new();
        let mut reach = vec![Reach::Loops; n];
        let mut groups = Vec::new();
        let mut counter = 0;
        for root in 0..n {
            if order[root] != UNSEEN {
                continue;
            }
            // (skill, how many of its edges were followed)
            let mut calls: Vec<(usize, usize)> = vec![(root, 0)];
            order[root] = counter;
            low[root] = counter;
            counter += 1;
            stack.push(root);
            on_stack[root] = true;
            while let Some(&mut (v, ref mut followed)) = calls.last_mut() {
                if let Some(&(_, w)) = self.edges[v].get(*followed) {
                    *followed += 1;
                    if order[w] == UNSEEN {
                        order[w] = counter;
                        low[w] = counter;
                        counter += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        calls.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(order[w]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == order[v] {
                    let mut group = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        group.push(w);
                        if w == v {
                            break;
                        }
                    }
                    let loops = group.len() > 1 || self.edges[v].iter().any(|&(_, t)| t == v);
                    if loops {
                        group.sort_unstable();
                        groups.push(group);
                    } else {
                        reach[v] = self.reach_of(v, &reach);
                    }
                }
            }
        }
        (groups, reach)
    }

    /// A skill outside any loop, from its targets' reach.
    fn reach_of(&self, v: usize, reach: &[Reach]) -> Reach {
        let mut best = Reach::Chain {
            levels: 1,
            next: None,
            last: v,
        };
        for &(step, t) in &self.edges[v] {
            match reach[t] {
                Reach::Loops => return Reach::Loops,
                Reach::Chain { levels, last, .. } => {
                    if let Reach::Chain {
                        levels: best_levels,
                        ..
                    } = best
                        && levels + 1 > best_levels
                    {
                        best = Reach::Chain {
                            levels: levels + 1,
                            next: Some((step, t)),
                            last,
                        };
                    }
                }
            }
        }
        best
    }

    /// One finding for a group of skills that use one another: a shortest
    /// loop through its first member (by id), at that member's `uses` step.
    fn cycle_finding(&self, group: &[usize]) -> UsesFinding {
        let start = group[0];
        let member: std::collections::HashSet<usize> = group.iter().copied().collect();
        // Breadth-first inside the group, back to `start`.
        let mut came_from: HashMap<usize, (usize, usize)> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut closing = None;
        'search: while let Some(v) = queue.pop_front() {
            for &(step, w) in &self.edges[v] {
                if w == start {
                    closing = Some((v, step));
                    break 'search;
                }
                if member.contains(&w) && !came_from.contains_key(&w) {
                    came_from.insert(w, (v, step));
                    queue.push_back(w);
                }
            }
        }
        // Walk back from the skill that closes the loop to `start`.
        let mut back = Vec::new();
        let mut first_step = closing.map_or(0, |(_, step)| step);
        let mut at = closing.map_or(start, |(v, _)| v);
        while at != start {
            back.push(at);
            let Some(&(prev, step)) = came_from.get(&at) else {
                break;
            };
            first_step = step;
            at = prev;
        }
        let path: Vec<usize> = std::iter::once(start)
            .chain(back.into_iter().rev())
            .chain([start])
            .collect();
        let names: Vec<&str> = path.iter().map(|&i| self.ids[i]).collect();
        let mut message = format!("`uses` forms a cycle: {}", abbreviate(&names, names.len()));
        if names.len() > HEAD + TAIL + 1 {
            message.push_str(&format!(" (a loop of {} skills)", names.len() - 1));
        }
        let loop_len = path.len() - 1;
        if group.len() > loop_len {
            let all: Vec<&str> = group.iter().map(|&i| self.ids[i]).collect();
            message.push_str(&format!(
                "; {} skills use one another in loops: {}",
                group.len(),
                abbreviate_list(&all)
            ));
        }
        UsesFinding {
            skill: self.ids[start].to_string(),
            step: first_step,
            code: "uses-cycle",
            message,
        }
    }

    /// One finding per chain deeper than the limit, at the skill that
    /// starts it: one no other too-deep skill uses.
    fn depth_findings(&self, reach: &[Reach]) -> Vec<UsesFinding> {
        let too_deep =
            |r: &Reach| matches!(r, Reach::Chain { levels, .. } if *levels > MAX_USES_DEPTH);
        let mut used_by_deep = vec![false; self.ids.len()];
        for (v, edges) in self.edges.iter().enumerate() {
            if too_deep(&reach[v]) {
                for &(_, t) in edges {
                    used_by_deep[t] = true;
                }
            }
        }
        let mut findings = Vec::new();
        for (v, r) in reach.iter().enumerate() {
            let Reach::Chain {
                levels,
                next: Some((step, _)),
                last,
            } = *r
            else {
                continue;
            };
            if levels <= MAX_USES_DEPTH || used_by_deep[v] {
                continue;
            }
            // The first names, following the deepest `uses`, and the last.
            let mut names = vec![self.ids[v]];
            let mut at = *r;
            while names.len() < HEAD
                && let Reach::Chain {
                    next: Some((_, t)), ..
                } = at
            {
                names.push(self.ids[t]);
                at = reach[t];
            }
            if levels > names.len() {
                names.push(self.ids[last]);
            }
            findings.push(UsesFinding {
                skill: self.ids[v].to_string(),
                step,
                code: "uses-depth",
                message: format!(
                    "`uses` nests deeper than {MAX_USES_DEPTH}, the limit at run time: {} is {levels} skills deep; flatten the chain",
                    abbreviate(&names, levels)
                ),
            });
        }
        findings
    }
}

/// `a → b → c` for a chain of `total` names of which `names` holds all, or
/// at least the first [`HEAD`] and the last.
fn abbreviate(names: &[&str], total: usize) -> String {
    if total <= HEAD + TAIL + 1 && names.len() == total {
        return names.join(" → ");
    }
    let head = &names[..HEAD.min(names.len())];
    let tail = &names[names.len().saturating_sub(TAIL).max(head.len())..];
    format!("{} → … → {}", head.join(" → "), tail.join(" → "))
}

/// `a, b, c` or `a, b, c, d, … (N in all)`.
fn abbreviate_list(names: &[&str]) -> String {
    if names.len() <= HEAD + TAIL + 1 {
        return names.join(", ");
    }
    format!("{}, … ({} in all)", names[..HEAD].join(", "), names.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Skills from `(id, [skill each step uses, or "" for a `set` step])`.
    fn skills(list: &[(&str, &[&str])]) -> BTreeMap<String, Resource<Skill>> {
        list.iter()
            .map(|(id, uses)| {
                let steps: Vec<Value> = uses
                    .iter()
                    .enumerate()
                    .map(|(i, u)| match *u {
                        "" => json!({"id": format!("s{i}"), "set": {"x": 1}}),
                        u => json!({"id": format!("s{i}"), "uses": u}),
                    })
                    .collect();
                let skill: Skill =
                    serde_json::from_value(json!({"id": id, "steps": steps})).expect("skill");
                (
                    id.to_string(),
                    Resource::new(skill, "skills.d/s.yaml".into(), 1, 1),
                )
            })
            .collect()
    }

    /// A chain `c00 → c01 → …` of `n` skills.
    fn chain(n: usize) -> BTreeMap<String, Resource<Skill>> {
        let ids: Vec<String> = (0..n).map(|i| format!("c{i:02}")).collect();
        let next: Vec<[&str; 1]> = (0..n)
            .map(|i| [ids.get(i + 1).map_or("", String::as_str)])
            .collect();
        let list: Vec<(&str, &[&str])> = (0..n).map(|i| (ids[i].as_str(), &next[i][..])).collect();
        skills(&list)
    }

    #[test]
    fn a_chain_as_deep_as_the_limit_passes_and_one_more_is_one_error_at_its_head() {
        assert_eq!(check(&chain(MAX_USES_DEPTH)), []);
        assert_eq!(
            check(&chain(MAX_USES_DEPTH + 1)),
            [UsesFinding {
                skill: "c00".into(),
                step: 0,
                code: "uses-depth",
                message: "`uses` nests deeper than 10, the limit at run time: \
                          c00 → c01 → c02 → c03 → … → c10 is 11 skills deep; flatten the chain"
                    .into(),
            }]
        );
    }

    #[test]
    fn depth_follows_the_deepest_uses_step() {
        // `top` uses a short chain first, then the long one: the finding
        // is at the second step, and every deep chain has one head.
        let mut all = chain(MAX_USES_DEPTH + 2);
        all.extend(skills(&[
            ("top", &["leaf", "c00"]),
            ("leaf", &[""]),
            ("other", &["c05"]),
        ]));
        let findings = check(&all);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!((findings[0].skill.as_str(), findings[0].step), ("top", 1));
        assert!(
            findings[0]
                .message
                .contains("top → c00 → c01 → c02 → … → c11 is 13 skills deep"),
            "{findings:?}"
        );
    }

    #[test]
    fn a_loop_is_one_finding_at_its_first_member() {
        let all = skills(&[("one", &["", "two"]), ("two", &["one"])]);
        assert_eq!(
            check(&all),
            [UsesFinding {
                skill: "one".into(),
                step: 1,
                code: "uses-cycle",
                message: "`uses` forms a cycle: one → two → one".into(),
            }]
        );
        let own = skills(&[("self", &["", "", "self"])]);
        assert_eq!(check(&own)[0].message, "`uses` forms a cycle: self → self");
        assert_eq!(check(&own)[0].step, 2);
    }

    #[test]
    fn loops_sharing_skills_are_one_finding_naming_the_group() {
        // a → b → a and a → c → d → a: one group of four.
        let all = skills(&[
            ("a", &["c", "b"]),
            ("b", &["a"]),
            ("c", &["d"]),
            ("d", &["a"]),
            ("e", &["a"]), // leads into the loop: not a loop itself, no depth
        ]);
        let findings = check(&all);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(
            findings[0].message,
            "`uses` forms a cycle: a → b → a; 4 skills use one another in loops: a, b, c, d"
        );
        assert_eq!(findings[0].step, 1, "the step of the loop shown");
    }

    #[test]
    fn separate_loops_are_separate_findings_and_a_deep_chain_beside_them_too() {
        let mut all = chain(MAX_USES_DEPTH + 1);
        all.extend(skills(&[("x", &["y"]), ("y", &["x"]), ("p", &["p"])]));
        let findings = check(&all);
        let found: Vec<(&str, &str)> = findings
            .iter()
            .map(|f| (f.skill.as_str(), f.code))
            .collect();
        assert_eq!(
            found,
            [
                ("p", "uses-cycle"),
                ("x", "uses-cycle"),
                ("c00", "uses-depth")
            ]
        );
    }

    #[test]
    fn a_use_of_an_unknown_skill_is_left_to_the_reference_check() {
        let all = skills(&[("a", &["nope", "a2"]), ("a2", &["nope"])]);
        assert_eq!(check(&all), []);
    }

    #[test]
    fn a_diamond_lattice_is_not_walked_path_by_path() {
        // 30 layers of 2 skills, each using both of the next layer: 2^30
        // paths. Reported once, at one head of the 30-deep chain.
        let ids: Vec<Vec<String>> = (0..30)
            .map(|l| vec![format!("l{l:02}a"), format!("l{l:02}b")])
            .collect();
        let mut list: Vec<(String, Vec<String>)> = Vec::new();
        for (l, layer) in ids.iter().enumerate() {
            let next = ids.get(l + 1).cloned().unwrap_or_default();
            for id in layer {
                list.push((id.clone(), next.clone()));
            }
        }
        let borrowed: Vec<(&str, Vec<&str>)> = list
            .iter()
            .map(|(id, u)| (id.as_str(), u.iter().map(String::as_str).collect()))
            .collect();
        let refs: Vec<(&str, &[&str])> = borrowed.iter().map(|(i, u)| (*i, &u[..])).collect();
        let findings = check(&skills(&refs));
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert!(
            findings[0].message.contains("is 30 skills deep"),
            "{findings:?}"
        );
    }

    #[test]
    fn abbreviations() {
        assert_eq!(abbreviate(&["a", "b", "a"], 3), "a → b → a");
        let long: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        assert_eq!(abbreviate(&long, 10), "n0 → n1 → n2 → n3 → … → n8 → n9");
        assert_eq!(
            abbreviate(&["n0", "n1", "n2", "n3", "n99"], 100),
            "n0 → n1 → n2 → n3 → … → n99"
        );
        assert_eq!(abbreviate_list(&long), "n0, n1, n2, n3, … (10 in all)");
        assert_eq!(abbreviate_list(&long[..3]), "n0, n1, n2");
    }
}
