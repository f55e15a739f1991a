//! The workflow template routes (`/v1/creative-agent/workflows/templates`, contract §4) in
//! Sogni's envelope: list (own, public or all, paged), get, create, patch (the version's
//! patch number goes up), fork and delete. A private template is its owner's alone; a
//! public one every account reads and forks. Changing or deleting another account's
//! template, like reading another's private one, is a 404, never a 403.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::creative::{authenticated, success};
use super::http::json_body;
use super::runs::{optional_body, respond};
use super::FrontState;
use crate::api::error::ApiError;
use crate::billing::accounts::Presented;
use crate::session::Services;
use crate::workflows::templates::store::{Stored, TemplateError, Visible};
use crate::workflows::templates::{bump, mint_id, template, view};

const MAX_BODY: usize = 1 << 20;

fn store_error(e: TemplateError) -> ApiError {
    match e {
        TemplateError::Exists(id) => ApiError::conflict(format!(
            "A template `{id}` exists; choose another id (or leave it out)"
        )),
        TemplateError::Changed(id) => {
            ApiError::conflict(format!("Template `{id}` changed meanwhile; read it again"))
        }
        e => ApiError::logged("the template store", e),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TemplateError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f)
        .await
        .map_err(|e| ApiError::logged("the template store", e))?
        .map_err(store_error)
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("No workflow template `{id}`"))
}

/// Template `id` if `key`'s account may read it (its own, or public); 404 otherwise.
pub async fn readable(s: &Services, key: &Presented, id: &str) -> Result<Stored, ApiError> {
    let (store, tid) = (Arc::clone(&s.templates), id.to_string());
    match blocking(move || store.get(&tid)).await? {
        Some(t) if t.public || t.owner == key.record.account_id => Ok(t),
        _ => Err(not_found(id)),
    }
}

/// Template `id` if it is `key`'s account's own; 404 otherwise.
async fn owned(s: &Services, key: &Presented, id: &str) -> Result<Stored, ApiError> {
    let t = readable(s, key, id).await?;
    if t.owner != key.record.account_id {
        return Err(not_found(id));
    }
    Ok(t)
}

/// `{userId, displayName}` of the account.
async fn author(s: &Services, key: &Presented) -> Result<Value, ApiError> {
    let store = Arc::clone(s.billing.store());
    let id = key.record.account_id.clone();
    let account = web::block(move || store.account(&id))
        .await
        .map_err(|e| ApiError::logged("reading the account", e))?
        .map_err(|e| ApiError::logged("reading the account", e))?;
    Ok(json!({"userId": account.id, "displayName": account.name}))
}

/// A checked template body made into a stored template.
fn stored(
    id: String,
    owner: &str,
    mut body: Map<String, Value>,
    version: String,
    author: Value,
    created_ms: u64,
) -> Stored {
    let now = crate::clock::unix_ms();
    let public = body.get("visibility").and_then(Value::as_str) == Some("public");
    body.insert("id".into(), json!(id));
    body.insert("version".into(), json!(version));
    body.insert("author".into(), author);
    body.insert("createdAt".into(), json!(created_ms));
    body.insert("updatedAt".into(), json!(now));
    Stored {
        id,
        owner: owner.to_string(),
        public,
        created_ms,
        body: Value::Object(body),
    }
}

fn query(req: &HttpRequest) -> Result<std::collections::HashMap<String, String>, ApiError> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| ApiError::bad_body("The query string is malformed"))
}

/// `GET …/templates?visibility=own|public|all&offset&limit`.
pub async fn list(req: HttpRequest, state: web::Data<FrontState>) -> HttpResponse {
    respond(
        async {
            let s = &state.services;
            let key = authenticated(&req, &state).await?;
            let q = query(&req)?;
            let visible = match q.get("visibility").map(String::as_str) {
                None | Some("all") => Visible::All,
                Some("own") => Visible::Own,
                Some("public") => Visible::Public,
                Some(_) => {
                    return Err(ApiError::invalid(
                        "visibility",
                        "`visibility` is own, public or all",
                    ))
                }
            };
            let number = |k: &str, default: usize| -> Result<usize, ApiError> {
                q.get(k).map_or(Ok(default), |v| {
                    v.parse()
                        .map_err(|_| ApiError::invalid(k, format!("`{k}` must be a whole number")))
                })
            };
            let (offset, limit) = (number("offset", 0)?, number("limit", 50)?);
            if !(1..=200).contains(&limit) {
                return Err(ApiError::invalid("limit", "`limit` is 1 to 200"));
            }
            let (store, account) = (Arc::clone(&s.templates), key.record.account_id.clone());
            // One more than asked says whether there is a next page.
            let mut found =
                blocking(move || store.list(&account, visible, offset, limit + 1)).await?;
            let next = (found.len() > limit).then_some(offset + limit);
            found.truncate(limit);
            let templates: Vec<Value> = found.iter().map(view).collect();
            Ok(success(json!({"templates": templates, "next": next})))
        }
        .await,
    )
}

/// `GET …/templates/{id}`.
pub async fn get(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let key = authenticated(&req, &state).await?;
            let t = readable(&state.services, &key, &id).await?;
            Ok(success(json!({"template": view(&t)})))
        }
        .await,
    )
}

/// `POST …/templates`.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let s = &state.services;
            let key = authenticated(&req, &state).await?;
            let body = json_body(&req, payload, MAX_BODY).await?;
            let checked = template::check(&body)?;
            let id = match body.get("id").filter(|v| !v.is_null()) {
                None => mint_id(
                    checked
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                )
                .map_err(|e| ApiError::logged("a template id", e))?,
                Some(Value::String(id)) if crate::media::store::valid_id(id) && id.len() <= 64 => {
                    id.clone()
                }
                Some(_) => {
                    return Err(ApiError::invalid(
                        "id",
                        "id: 1 to 64 letters, digits, `-`, `_` or `.`",
                    ))
                }
            };
            let version = match body.get("version").and_then(Value::as_str) {
                Some(v)
                    if v.split('.').count() == 3
                        && v.split('.').all(|p| p.parse::<u64>().is_ok()) =>
                {
                    v.to_string()
                }
                _ => "0.0.1".to_string(),
            };
            let t = stored(
                id,
                &key.record.account_id,
                checked,
                version,
                author(s, &key).await?,
                crate::clock::unix_ms(),
            );
            let (store, saved) = (Arc::clone(&s.templates), t.clone());
            blocking(move || store.insert(&saved)).await?;
            Ok(HttpResponse::Created()
                .json(json!({"status": "success", "data": {"template": view(&t)}})))
        }
        .await,
    )
}

/// `PATCH …/templates/{id}`: the fields sent replace the template's; the version's patch
/// number goes up.
pub async fn patch(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let s = &state.services;
            let key = authenticated(&req, &state).await?;
            let t = owned(s, &key, &id).await?;
            let changes = json_body(&req, payload, MAX_BODY).await?;
            let changes = changes
                .as_object()
                .ok_or_else(|| ApiError::bad_body("A patch is a JSON object"))?;
            if changes.get("id").is_some_and(|v| v != &json!(t.id)) {
                return Err(ApiError::invalid(
                    "id",
                    "id: a template's id does not change (fork it instead)",
                ));
            }
            let mut merged = t.body.as_object().cloned().unwrap_or_default();
            for (k, v) in changes {
                merged.insert(k.clone(), v.clone());
            }
            let checked = template::check(&Value::Object(merged))?;
            let old = t.body["version"].as_str().unwrap_or_default().to_string();
            let mut next = stored(
                t.id.clone(),
                &t.owner,
                checked,
                bump(&old),
                t.body["author"].clone(),
                t.created_ms,
            );
            if let Some(from) = t.body.get("forkedFrom") {
                next.body["forkedFrom"] = from.clone();
            }
            let (store, saved) = (Arc::clone(&s.templates), next.clone());
            blocking(move || store.replace(&saved, &old)).await?;
            Ok(success(json!({"template": view(&next)})))
        }
        .await,
    )
}

/// `POST …/templates/{id}/fork {newName?}`: a private copy for the caller.
pub async fn fork(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let s = &state.services;
            let key = authenticated(&req, &state).await?;
            let body = optional_body(&req, payload).await?;
            let t = readable(s, &key, &id).await?;
            let mut copy = t.body.as_object().cloned().unwrap_or_default();
            let name = match body
                .get("newName")
                .or_else(|| body.get("new_name"))
                .filter(|v| !v.is_null())
            {
                None => format!(
                    "{} (fork)",
                    copy.get("name").and_then(Value::as_str).unwrap_or_default()
                ),
                Some(Value::String(n)) => n.clone(),
                Some(_) => return Err(ApiError::invalid("newName", "`newName` must be a string")),
            };
            copy.insert("name".into(), json!(name));
            copy.insert("visibility".into(), json!("private"));
            let checked = template::check(&Value::Object(copy))?;
            let new_id = mint_id(&name).map_err(|e| ApiError::logged("a template id", e))?;
            let mut f = stored(
                new_id,
                &key.record.account_id,
                checked,
                "0.0.1".into(),
                author(s, &key).await?,
                crate::clock::unix_ms(),
            );
            f.body["forkedFrom"] = json!({"id": t.id, "version": t.body["version"]});
            let (store, saved) = (Arc::clone(&s.templates), f.clone());
            blocking(move || store.insert(&saved)).await?;
            Ok(HttpResponse::Created()
                .json(json!({"status": "success", "data": {"template": view(&f)}})))
        }
        .await,
    )
}

/// `DELETE …/templates/{id}`.
pub async fn delete(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let s = &state.services;
            let key = authenticated(&req, &state).await?;
            let t = owned(s, &key, &id).await?;
            let (store, tid) = (Arc::clone(&s.templates), t.id.clone());
            blocking(move || store.delete(&tid)).await?;
            Ok(success(json!({"deleted": true, "id": t.id})))
        }
        .await,
    )
}
