use super::*;

#[test]
fn traceparent_parses_only_the_w3c_form() {
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(
        parse_traceparent(good),
        Some((
            "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            "00f067aa0ba902b7".into()
        ))
    );
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    ] {
        assert_eq!(parse_traceparent(bad), None, "{bad:?}");
    }
}

#[test]
fn a_run_keeps_its_ids_in_every_process() {
    let trace = new_trace_id();
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, new_trace_id());
    assert_eq!(root_span_id("r1"), root_span_id("r1"));
    assert_ne!(root_span_id("r1"), root_span_id("r2"));
    // Tracing off: the no-op tracer keeps the run's ids for `traceparent`.
    let cx = run_context(&trace, "r1").expect("a context");
    let header = traceparent(&cx).expect("a header");
    assert_eq!(header, format!("00-{trace}-{:016x}-01", root_span_id("r1")));
    assert!(run_context("", "r1").is_none());
    assert!(run_context(&"0".repeat(32), "r1").is_none());
}
