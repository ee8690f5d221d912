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
use flagforge_protocol::{value::context_from_json, Context, ErrorCode, Resolution};
use serde_json::{json, Value as JsonValue};
use sha2::{Digest, Sha256};

use tokio::sync::broadcast::error::RecvError;

use crate::{AppState, OfrepErrors};

type Shared = State<Arc<AppState>>;

/// The OFREP event stream (ADR-0008): a `refetchEvaluation` message per new version.
const OFREP_EVENTS: &str = "/ofrep/v1/events";

/// The daemon's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_one))
        .route("/ofrep/v1/evaluate/flags", post(evaluate_bulk))
        .route(OFREP_EVENTS, get(ofrep_events))
        .route("/v1/modules/{ruleset}", get(module_bytes))
        .route("/v1/modules/{ruleset}/events", get(module_events))
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

/// The flag's JSON as OFREP answers it; `Err` with the status when the evaluation failed and
/// the host answers failures as the specification defines ([`OfrepErrors::Spec`]).
/// `float`: the flag's numbers are floats ([`flagforge_protocol::FlagInfo::float`]).
fn ofrep_entry(
    state: &AppState,
    r: &Resolution,
    float: bool,
    metadata: JsonValue,
) -> Result<JsonValue, (StatusCode, JsonValue)> {
    let mut body = r.to_json(float);
    let Some(fields) = body.as_object_mut() else {
        return Ok(body);
    };
    let error_message = fields.remove("errorMessage").unwrap_or_default();
    fields.remove("errorCode");
    // The flag's own metadata (`metadata:` in its rule file), then the host's, which wins.
    let mut metadata = match (fields.remove("metadata"), metadata) {
        (Some(JsonValue::Object(mut own)), JsonValue::Object(host)) => {
            own.extend(host);
            JsonValue::Object(own)
        }
        (_, host) => host,
    };
    if let Some(code) = r.error_code {
        if state.ofrep_errors == OfrepErrors::Fallback {
            metadata["errorCode"] = code.as_str().into();
            metadata["errorDetails"] = error_message;
        } else {
            let status = match code {
                ErrorCode::FlagNotFound => StatusCode::NOT_FOUND,
                ErrorCode::General | ErrorCode::ProviderNotReady | ErrorCode::ProviderFatal => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                _ => StatusCode::BAD_REQUEST,
            };
            let failure = json!({ "key": r.key, "errorCode": code.as_str(), "errorDetails": error_message, "metadata": metadata });
            return Err((status, failure));
        }
    }
    fields.insert("metadata".into(), metadata);
    Ok(body)
}

/// A single-flag OFREP response.
fn ofrep_response(
    state: &AppState,
    r: &Resolution,
    served: &Served,
    metadata: JsonValue,
) -> Response {
    let float = served
        .module
        .manifest()
        .flag(&r.key)
        .is_some_and(|f| f.float);
    match ofrep_entry(state, r, float, metadata) {
        Ok(body) => Json(body).into_response(),
        Err((status, body)) => (status, Json(body)).into_response(),
    }
}

fn flag_metadata(ruleset: &str, served: &Served) -> JsonValue {
    json!({ "ruleset": ruleset, "version": served.version, "sha256": served.sha256 })
}

/// The served rulesets in lookup order (the configured ones first, then any others by name),
/// or the `503` answered while nothing is loaded.
fn lookup_order(
    state: &AppState,
    key: Option<&str>,
) -> Result<Vec<(String, Arc<Served>)>, Box<Response>> {
    let mut all = state.registry.all();
    if all.is_empty() {
        // OFREP defines no "not ready" status; 500 with `PROVIDER_NOT_READY` is an error
        // response every OFREP client parses (a 503 was reported as a malformed response).
        let mut resp = failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            key,
            "PROVIDER_NOT_READY",
            "no ruleset is loaded yet",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(Box::new(resp));
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
        let mut metadata = flag_metadata(&ruleset, &module);
        metadata["decision"] = JsonValue::String(outcome.to_owned());
        return ofrep_response(&state, &resolved.resolution, &module, metadata);
    }
    let r = module.module.evaluate(&key, &ctx, false);
    state.metrics.evaluated(&r);
    ofrep_response(&state, &r, &module, flag_metadata(&ruleset, &module))
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
    // Each flag's entry holds only what its answer depends on (per-flag metadata names the
    // ruleset, not its version), so a client comparing entries sees exactly the flags whose
    // answers changed; the versions are the flag set's metadata.
    let mut flags = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut set_metadata = serde_json::Map::new();
    for (ruleset, module) in &served {
        set_metadata.insert(format!("{ruleset}.version"), module.version.into());
        set_metadata.insert(format!("{ruleset}.sha256"), module.sha256.clone().into());
        let ctx = with_now(module, &ctx);
        // Results come in declaration order: each flag's manifest entry alongside.
        let infos = &module.module.manifest().flags;
        for (r, info) in module.module.evaluate_all(&ctx, false).iter().zip(infos) {
            if seen.insert(r.key.clone()) {
                state.metrics.evaluated(r);
                let metadata = json!({ "ruleset": ruleset });
                flags.push(match ofrep_entry(&state, r, info.float, metadata) {
                    Ok(entry) | Err((_, entry)) => entry,
                });
            }
        }
    }
    let body = json!({
        "flags": flags,
        "metadata": set_metadata,
        "eventStreams": [{
            "type": "sse",
            "endpoint": { "requestUri": OFREP_EVENTS },
            "inactivityDelaySec": 120,
        }],
    })
    .to_string();
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
        return resp;
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
    // A client one version behind (it sent the previous module's ETag) learns which flags'
    // answers can have changed (the semantic diff of the compiled rules).
    let one_behind = served
        .previous
        .as_ref()
        .is_some_and(|p| if_none_match(&headers, &format!("\"{p}\"")));
    if one_behind {
        if let Ok(v) = HeaderValue::from_str(&served.flags_changed.join(",")) {
            resp.headers_mut().insert("x-flagforge-flags-changed", v);
        }
    }
    resp
}

/// CORS for every route (OFREP, modules, events) with tower-http's layer: `origins` is `*` or
/// a comma-separated list of origins. Preflights are answered by the layer.
pub fn cors(origins: &str) -> Result<tower_http::cors::CorsLayer, String> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = if origins.trim() == "*" {
        AllowOrigin::any()
    } else {
        let list = origins
            .split(',')
            .map(|o| {
                HeaderValue::from_str(o.trim())
                    .map_err(|_| format!("--cors-origin `{o}` is not a valid origin"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(list)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            header::AUTHORIZATION,
            header::HeaderName::from_static("flagforge-decision"),
        ])
        .expose_headers([
            header::ETAG,
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-flagforge-version"),
            header::HeaderName::from_static("x-flagforge-flags-changed"),
        ])
        .max_age(Duration::from_secs(600)))
}

fn module_event(s: &Served) -> Event {
    Event::default()
        .event("module")
        .id(s.version.to_string())
        .data(
            json!({
                "version": s.version,
                "sha256": s.sha256,
                "previous": s.previous,
                "flagsChanged": s.flags_changed,
            })
            .to_string(),
        )
}

/// Server-sent events for one ruleset: the module served now (if any), then one `module`
/// event (`{"version", "sha256"}`) per new version, with keep-alive comments in between.
async fn module_events(State(state): Shared, Path(ruleset): Path<String>) -> Response {
    let updates = state.registry.updates();
    let first = state.registry.get(&ruleset).map(|s| module_event(&s));
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
                    // What is served now (after a lag too: some announcements were missed).
                    Ok(i) if i.ruleset == ruleset => match registry.get(&ruleset) {
                        Some(s) => module_event(&s),
                        None => continue,
                    },
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => match registry.get(&ruleset) {
                        Some(s) => module_event(&s),
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
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(every))
        .into_response()
}

/// The served versions as one tag: what an OFREP `refetchEvaluation` event carries.
fn config_etag(state: &AppState) -> String {
    let mut all = state.registry.all();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let joined: Vec<String> = all
        .iter()
        .map(|(n, s)| format!("{n}@{}:{}", s.version, s.sha256))
        .collect();
    format!(
        "\"{}\"",
        hex::encode(&Sha256::digest(joined.join(",").as_bytes())[..16])
    )
}

fn refetch_event(state: &AppState) -> Event {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Event::default().data(
        json!({ "type": "refetchEvaluation", "etag": config_etag(state), "lastModified": now_ms })
            .to_string(),
    )
}

/// The OFREP event stream advertised in bulk responses (`eventStreams`): a
/// `refetchEvaluation` message each time any ruleset gets a new version, so web providers
/// re-fetch without polling.
async fn ofrep_events(State(state): Shared) -> Response {
    let updates = state.registry.updates();
    let stream = futures_util::stream::unfold(
        (updates, Arc::clone(&state)),
        |(mut updates, state)| async move {
            match updates.recv().await {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    let event = refetch_event(&state);
                    Some((Ok::<_, Infallible>(event), (updates, state)))
                }
                Err(RecvError::Closed) => None,
            }
        },
    );
    let every = (state.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(15));
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(every))
        .into_response()
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
