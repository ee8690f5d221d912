//! HTTP routes: OFREP evaluation, module download, metrics, health and readiness.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flagforge_kafka::Served;
use flagforge_protocol::{value::context_from_json, Context, Resolution};
use serde_json::{json, Value as JsonValue};
use sha2::{Digest, Sha256};

use tokio::sync::broadcast::error::RecvError;

use crate::AppState;

type Shared = State<Arc<AppState>>;

/// The daemon's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_one))
        .route("/ofrep/v1/evaluate/flags", post(evaluate_bulk))
        .route(
            "/v1/modules/{ruleset}",
            get(module_bytes).options(preflight),
        )
        .route(
            "/v1/modules/{ruleset}/events",
            get(module_events).options(preflight),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

fn failure(
    status: StatusCode,
    key: Option<&str>,
    code: &str,
    details: impl Into<String>,
) -> Response {
    let mut body = json!({ "errorCode": code, "errorDetails": details.into() });
    if let Some(k) = key {
        body["key"] = JsonValue::String(k.to_owned());
    }
    (status, Json(body)).into_response()
}

/// The request's context, plus `now` when a served schema declares it and it is absent.
fn context_of(body: &Bytes, key: Option<&str>) -> Result<Context, Box<Response>> {
    if body.is_empty() {
        return Ok(Context::new());
    }
    let json: JsonValue = serde_json::from_slice(body).map_err(|e| {
        failure(
            StatusCode::BAD_REQUEST,
            key,
            "PARSE_ERROR",
            format!("request body is not JSON: {e}"),
        )
    })?;
    if !json.is_object() {
        return Err(Box::new(failure(
            StatusCode::BAD_REQUEST,
            key,
            "PARSE_ERROR",
            "request body must be a JSON object (`{\"context\": {...}}`)",
        )));
    }
    match json.get("context") {
        None | Some(JsonValue::Null) => Ok(Context::new()),
        Some(c) => context_from_json(c).map_err(|e| {
            Box::new(failure(
                StatusCode::BAD_REQUEST,
                key,
                "INVALID_CONTEXT",
                e.to_string(),
            ))
        }),
    }
}

fn with_now(served: &Served, ctx: &Context) -> Context {
    let mut ctx = ctx.clone();
    served.module.manifest().fill_now(&mut ctx, || {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        flagforge_protocol::time::format_timestamp(nanos)
    });
    ctx
}

fn ofrep_success(r: &Resolution, ruleset: &str, served: &Served) -> JsonValue {
    let mut metadata =
        json!({ "ruleset": ruleset, "version": served.version, "sha256": served.sha256 });
    if let Some(code) = r.error_code {
        metadata["errorCode"] = serde_json::to_value(code).unwrap_or(JsonValue::Null);
        metadata["errorDetails"] = JsonValue::String(r.error_message.clone().unwrap_or_default());
    }
    let mut body = json!({ "key": r.key, "value": r.value.to_json(), "reason": r.reason.as_str(), "metadata": metadata });
    if let Some(v) = &r.variant {
        body["variant"] = JsonValue::String(v.clone());
    }
    body
}

/// The served rulesets in lookup order (the configured ones first, then any others by name),
/// or the `503` answered while nothing is loaded.
fn lookup_order(
    state: &AppState,
    key: Option<&str>,
) -> Result<Vec<(String, Arc<Served>)>, Box<Response>> {
    let mut all = state.registry.all();
    if all.is_empty() {
        return Err(Box::new(failure(
            StatusCode::SERVICE_UNAVAILABLE,
            key,
            "PROVIDER_NOT_READY",
            "no ruleset is loaded yet",
        )));
    }
    all.sort_by_key(|(name, _)| {
        state
            .rulesets
            .iter()
            .position(|r| r == name)
            .unwrap_or(usize::MAX)
    });
    Ok(all)
}

async fn evaluate_one(
    State(state): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = match context_of(&body, Some(&key)) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let served = match lookup_order(&state, Some(&key)) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let Some((ruleset, module)) = served
        .into_iter()
        .find(|(_, s)| s.module.manifest().flag(&key).is_some())
    else {
        return failure(
            StatusCode::NOT_FOUND,
            Some(&key),
            "FLAG_NOT_FOUND",
            format!("flag `{key}` is not served here"),
        );
    };
    let ctx = with_now(&module, &ctx);
    // A workflow's decision context (header `flagforge-decision`): the carried answer wins.
    // A host that verifies no decisions ignores the header (counted): it travels through
    // services that do not use it. Evaluation runs on the request's task: a call is bounded by
    // its fuel budget (microseconds), so it needs no blocking thread.
    let header = flagforge_decision::read_http(&headers);
    if header.is_some() && state.decision_keys.is_empty() {
        state.metrics.decision("ignored");
    } else if let Some(header) = header {
        let mismatches = flagforge_decision::Mismatches::default();
        let lookup = flagforge_decision::Lookup::new(
            &module.module,
            Some(header),
            &state.decision_keys,
            flagforge_decision::now_ms(),
            &mismatches,
            true,
        );
        let resolved = lookup.resolve(&key, &ctx);
        for (flag, n) in mismatches.counts() {
            for _ in 0..n {
                state.metrics.mismatch(&flag);
            }
        }
        let outcome = match &resolved.source {
            flagforge_decision::Source::Carried => "carried",
            flagforge_decision::Source::Local => "local",
            flagforge_decision::Source::Rejected(kind) => kind,
        };
        state.metrics.decision(outcome);
        state.metrics.evaluated(&resolved.resolution);
        let mut body = ofrep_success(&resolved.resolution, &ruleset, &module);
        body["metadata"]["decision"] = JsonValue::String(outcome.to_owned());
        return Json(body).into_response();
    }
    let r = module.module.evaluate(&key, &ctx, false);
    state.metrics.evaluated(&r);
    Json(ofrep_success(&r, &ruleset, &module)).into_response()
}

async fn evaluate_bulk(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let ctx = match context_of(&body, None) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let served = match lookup_order(&state, None) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let mut flags = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (ruleset, module) in &served {
        let ctx = with_now(module, &ctx);
        for r in module.module.evaluate_all(&ctx, false) {
            if seen.insert(r.key.clone()) {
                state.metrics.evaluated(&r);
                flags.push(ofrep_success(&r, ruleset, module));
            }
        }
    }
    let body = json!({ "flags": flags }).to_string();
    let etag = format!(
        "\"{}\"",
        hex::encode(&Sha256::digest(body.as_bytes())[..16])
    );
    if if_none_match(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, "application/json".to_owned()),
        ],
        body,
    )
        .into_response()
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

async fn module_bytes(
    State(state): Shared,
    Path(ruleset): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(served) = state.registry.get(&ruleset) else {
        return failure(
            StatusCode::NOT_FOUND,
            None,
            "FLAG_NOT_FOUND",
            format!("ruleset `{ruleset}` is not served here"),
        );
    };
    let etag = format!("\"{}\"", served.sha256);
    let version = HeaderValue::from(served.version);
    if if_none_match(&headers, &etag) {
        let mut resp = (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
        resp.headers_mut().insert("x-flagforge-version", version);
        return cors(&state, resp);
    }
    let mut resp = (
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, "application/wasm".to_owned()),
        ],
        served.bytes.as_ref().clone(),
    )
        .into_response();
    resp.headers_mut().insert("x-flagforge-version", version);
    cors(&state, resp)
}

/// Adds the CORS headers for the configured origin (`flagforge host --cors-origin`), so
/// browser pages on another origin can download modules and follow their events.
fn cors(state: &AppState, mut resp: Response) -> Response {
    if let Some(origin) = &state.cors_origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("etag, x-flagforge-version"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("if-none-match"),
        );
        h.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    resp
}

async fn preflight(State(state): Shared) -> Response {
    cors(&state, StatusCode::NO_CONTENT.into_response())
}

fn module_event(version: u64, sha256: &str) -> Event {
    Event::default()
        .event("module")
        .id(version.to_string())
        .data(json!({ "version": version, "sha256": sha256 }).to_string())
}

/// Server-sent events for one ruleset: the module served now (if any), then one `module`
/// event (`{"version", "sha256"}`) per new version, with keep-alive comments in between.
async fn module_events(State(state): Shared, Path(ruleset): Path<String>) -> Response {
    let updates = state.registry.updates();
    let first = state
        .registry
        .get(&ruleset)
        .map(|s| module_event(s.version, &s.sha256));
    let registry = Arc::clone(&state.registry);
    let stream = futures_util::stream::unfold(
        (updates, first, registry, ruleset),
        |(mut updates, first, registry, ruleset)| async move {
            if let Some(event) = first {
                return Some((
                    Ok::<_, Infallible>(event),
                    (updates, None, registry, ruleset),
                ));
            }
            loop {
                let event = match updates.recv().await {
                    Ok(i) if i.ruleset == ruleset => module_event(i.version, &i.sha256),
                    Ok(_) => continue,
                    // Missed some announcements: say what is served now.
                    Err(RecvError::Lagged(_)) => match registry.get(&ruleset) {
                        Some(s) => module_event(s.version, &s.sha256),
                        None => continue,
                    },
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), (updates, None, registry, ruleset)));
            }
        },
    );
    // Keep-alive comments at most every half idle timeout, so the listener never closes an
    // event stream as idle.
    let every = (state.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(15));
    let resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(every))
        .into_response();
    cors(&state, resp)
}

async fn metrics(State(state): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&state),
    )
        .into_response()
}

async fn readyz(State(state): Shared) -> Response {
    let served = state.registry.all();
    let missing: Vec<&String> = state
        .rulesets
        .iter()
        .filter(|r| !served.iter().any(|(name, _)| name == *r))
        .collect();
    if served.is_empty() || !missing.is_empty() {
        let body = json!({ "ready": false, "missing": missing, "served": served.iter().map(|(n, _)| n).collect::<Vec<_>>() });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let rulesets: Vec<JsonValue> = served
        .iter()
        .map(|(n, s)| {
            json!({
                "ruleset": n,
                "version": s.version,
                "sha256": s.sha256,
                "source": format!("{:?}", s.source).to_lowercase(),
                "published_at": s.created_at,
                "serving_for_seconds": s.since.elapsed().as_secs(),
                "propagation": s.module.manifest().strictest_propagation().map(|p| p.as_str()),
                "stale": state.registry.is_stale(s),
            })
        })
        .collect();
    Json(json!({ "ready": true, "rulesets": rulesets })).into_response()
}
