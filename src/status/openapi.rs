//! `GET /api/v1/openapi.json`: the API described as OpenAPI 3.1, written by
//! hand in `openapi.json` and embedded. The tests below hold it to the
//! router: every route in [`ROUTES`](super::api::ROUTES) is documented and
//! every documented path is served.

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn handler() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::api::ROUTES;
    use serde_json::Value;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    #[test]
    fn every_route_is_documented_and_every_documented_path_served() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        for route in ROUTES {
            let entry = paths
                .get(*route)
                .unwrap_or_else(|| panic!("{route} is served but not in openapi.json"));
            assert!(entry["get"].is_object(), "{route}: no `get` operation");
        }
        for path in paths.keys() {
            assert!(
                ROUTES.contains(&path.as_str()),
                "openapi.json documents {path}, which the router does not serve"
            );
        }
    }

    /// Routes are registered only from `ROUTES`, so the check above sees
    /// them all.
    #[test]
    fn the_router_registers_routes_only_from_the_list() {
        let api = include_str!("api.rs");
        assert_eq!(
            api.matches(".route(").count(),
            1,
            "register routes through api::ROUTES, not with a separate .route() call"
        );
        assert!(!api.contains(".nest("));
        // The one merge is the dashboard page and its assets: HTML, not API.
        assert_eq!(api.matches(".merge(").count(), 1);
        assert!(api.contains(".merge(super::dashboard::routes())"));
    }

    #[test]
    fn path_parameters_are_declared_and_refs_resolve() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let params: Vec<Value> = item["get"]["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|p| resolve(&doc, &p).clone())
                .collect();
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(['{', '}']);
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{path}: path parameter {name} is not declared"
                );
            }
        }
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            assert!(
                !resolve(&doc, &serde_json::json!({"$ref": r})).is_null(),
                "dangling $ref {r}"
            );
        }
    }

    #[test]
    fn the_spec_shapes_carry_the_spec_field_names() {
        let doc = document();
        let fields = |schema: &str| -> Vec<String> {
            doc["components"]["schemas"][schema]["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("no schema {schema}"))
                .keys()
                .cloned()
                .collect()
        };
        for (schema, want) in [
            (
                "Run",
                &[
                    "id",
                    "job_id",
                    "status",
                    "trigger",
                    "inputs",
                    "attempt",
                    "attempts",
                    "scheduled_at",
                    "queued_at",
                    "started_at",
                    "finished_at",
                    "duration_ms",
                    "error",
                    "spec_hash",
                    "revision",
                    "steps",
                    "usage",
                ][..],
            ),
            (
                "Job",
                &[
                    "id",
                    "type",
                    "enabled",
                    "file",
                    "line",
                    "spec",
                    "spec_hash",
                    "flow",
                    "priority",
                    "next_fire_at",
                    "last_run",
                    "failure_memory",
                    "active_runs",
                ][..],
            ),
            (
                "Event",
                &["id", "type", "at", "job_id", "run_id", "data"][..],
            ),
            ("Error", &["error"][..]),
            ("ListPage", &["items", "next_cursor"][..]),
        ] {
            let have = fields(schema);
            for f in want {
                assert!(have.iter().any(|h| h == f), "{schema} lacks {f}");
            }
        }
    }

    fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
        match v["$ref"].as_str() {
            Some(r) => doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or(&Value::Null),
            None => v,
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| collect_refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
            _ => {}
        }
    }
}
