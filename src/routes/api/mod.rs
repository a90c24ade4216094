//! `/api/*`: JSON in, JSON out, bearer tokens and scopes.

mod admin;
mod admin_clients;
mod admin_users;
pub mod extract;
mod items;
mod tokens;
mod users;

use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::web;

use super::ApiError;

/// Item bodies are at most 10,000 characters, and a JSON encoder may spell each as a 12-byte
/// surrogate-pair escape (`\ud83d\ude00`): leave room for that and the other fields.
const JSON_LIMIT: usize = 256 * 1024;

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(
        utoipa_actix_web::scope("/api")
            .app_data(web::JsonConfig::default().limit(JSON_LIMIT).error_handler(|err, _| json_error(err).into()))
            .app_data(web::QueryConfig::default().error_handler(|err, _| query_error(err).into()))
            .app_data(
                web::PathConfig::default()
                    .error_handler(|err, _| ApiError::InvalidRequest(format!("the path is not valid: {err}")).into()),
            )
            .configure(users::configure)
            .configure(tokens::configure)
            .configure(items::configure)
            .configure(admin::configure)
            .configure(admin_users::configure)
            .configure(admin_clients::configure)
            .default_service(web::to(super::api_fallback)),
    );
}

fn query_error(err: QueryPayloadError) -> ApiError {
    ApiError::InvalidRequest(format!("the query string is not valid: {err}"))
}

fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => ApiError::PayloadTooLarge,
        JsonPayloadError::Deserialize(err) => ApiError::InvalidRequest(format!("the JSON body is not valid: {err}")),
        other => ApiError::InvalidRequest(format!("the JSON body could not be read: {other}")),
    }
}
