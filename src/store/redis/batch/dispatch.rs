//! Dispatches in a batch: the runs handed to the workers become `ready`
//! entries of up to `DISPATCH_PACK` runs, the records sent once. Runs of
//! a job with a `worker_group` go to that group's stream, in packs of
//! their own. A pack whose records are all written outside the script
//! is a plain XADD too (see [`super::plain`]; a group's stream is
//! registered by the script, `ready_group`); one that carries a record
//! the script writes is the script's `dispatch` or `dispatch_to` op.

use super::{Carried, DISPATCH_PACK, FIRST_OP_ARGV, Ops, Payloads};

impl Ops {
    /// Several runs per ready entry: one stream entry, one claim, one
    /// acknowledgement for the lot. A run's record travels once: the
    /// entry names the argument that carries it. Runs of a worker group
    /// go to their group's stream (`dispatch_to`, the group first), in
    /// packs of their own; the others take the `dispatch` op as before.
    pub(super) fn dispatches(
        &mut self,
        dispatch: &[(String, Option<String>)],
        payloads: &mut Payloads,
    ) {
        // (group, its runs: (id, where the record is)).
        type Packs<'a> = Vec<(Option<&'a str>, Vec<(&'a str, Carried)>)>;
        let mut by_stream: Packs = Vec::new();
        for (id, group) in dispatch {
            let Some(at) = payloads.by_run.remove(id).flatten() else {
                // Cannot happen: a dispatch is submitted with its record.
                tracing::error!(run = %id, "store: dispatch without its run record; not dispatched");
                continue;
            };
            let group = group.as_deref();
            match by_stream.iter_mut().find(|(g, _)| *g == group) {
                Some((_, runs)) => runs.push((id, at)),
                None => by_stream.push((group, vec![(id, at)])),
            }
        }
        for (group, runs) in by_stream {
            let (plain, scripted): (Vec<_>, Vec<_>) = runs
                .into_iter()
                .partition(|(_, at)| matches!(at, Carried::Plain(_)));
            if let Some(g) = group.filter(|_| !plain.is_empty()) {
                self.push("ready_group", vec![g.to_string()]);
            }
            for pack in plain.chunks(DISPATCH_PACK) {
                let ids: Vec<&str> = pack.iter().map(|(id, _)| *id).collect();
                let recs = pack
                    .iter()
                    .filter_map(|(_, at)| match at {
                        Carried::Plain(i) => Some(*i),
                        Carried::Argv(_) => None,
                    })
                    .collect();
                self.plain.ready(group, ids.join(" "), recs);
            }
            for pack in scripted.chunks(DISPATCH_PACK) {
                let ids: Vec<&str> = pack.iter().map(|(id, _)| *id).collect();
                let mut fields: Vec<String> = group.iter().map(|g| g.to_string()).collect();
                fields.push(ids.join(" "));
                fields.extend(pack.iter().filter_map(|(_, at)| match at {
                    Carried::Argv(i) => Some((i + FIRST_OP_ARGV).to_string()),
                    Carried::Plain(_) => None,
                }));
                self.push(
                    if group.is_some() {
                        "dispatch_to"
                    } else {
                        "dispatch"
                    },
                    fields,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Known, Ops};
    use crate::store::Coalesced;
    use crate::store::runs::RunStatus;
    use crate::testkit::sample_run;

    /// A worker group's runs go to their own packs (`dispatch_to`, the
    /// group first); the others keep the plain `dispatch` op.
    #[test]
    fn a_groups_runs_are_packed_apart_and_name_their_group() {
        use crate::store::Mutation;
        let mut c = Coalesced::default();
        for (id, group) in [
            ("p1", None),
            ("g1", Some("gpu")),
            ("p2", None),
            ("g2", Some("gpu")),
        ] {
            c.add(Mutation::PutRun(Box::new(sample_run(
                id,
                "job",
                id,
                RunStatus::Running,
            ))));
            c.add(Mutation::Dispatch {
                run_id: id.into(),
                group: group.map(str::to_string),
            });
        }
        let mut ops = Ops::default();
        ops.coalesced(&c, &Known::default(), Some(1)).unwrap();
        let plain = ops.args.iter().position(|a| a == "dispatch").unwrap();
        assert_eq!(ops.args[plain + 1], "3");
        assert_eq!(ops.args[plain + 2], "p1 p2");
        let grouped = ops.args.iter().position(|a| a == "dispatch_to").unwrap();
        assert_eq!(ops.args[grouped + 1], "4");
        assert_eq!(ops.args[grouped + 2], "gpu");
        assert_eq!(ops.args[grouped + 3], "g1 g2");
        assert_eq!(ops.args.iter().filter(|a| *a == "dispatch").count(), 1);
    }
}
