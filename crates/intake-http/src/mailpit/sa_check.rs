//! `GET /api/v1/message/{ID}/sa-check`: SpamAssassin's verdict on a message, asked of the
//! configured spamd (`[spamd]`, its `REPORT` command), in Mailpit's shape `{Error, IsSpam,
//! Score, Rules: [{Name, Score, Description}]}` (scores rounded down to one decimal, as
//! Mailpit's). spamd not configured: 400 `no SpamAssassin service defined`, as Mailpit
//! without SpamAssassin; spamd unreachable or confused: 200 with `Error` set and `Rules`
//! null, as Mailpit.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::resolve;
use crate::AppState;
use crate::error::ApiError;
use crate::lookup::load;

/// Mailpit's SpamAssassin result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SaResult {
    is_spam: bool,
    error: String,
    score: f64,
    rules: Option<Vec<SaRule>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SaRule {
    score: f64,
    name: String,
    description: String,
}

/// Rounded down to one decimal, as Mailpit shows scores.
fn one_decimal(n: f64) -> f64 {
    (n * 10.0).floor() / 10.0
}

pub(super) async fn check(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SaResult>, ApiError> {
    let Some(spamd) = state.mailpit_services.spamassassin.clone() else {
        return Err(ApiError::BadRequest(
            "no SpamAssassin service defined".into(),
        ));
    };
    let id = resolve(&state, &id).await?;
    let m = load(&state, &id).await?;
    Ok(Json(match spamd(m.raw.clone()).await {
        Ok(r) => SaResult {
            is_spam: r.spam,
            error: String::new(),
            score: one_decimal(r.score),
            rules: Some(
                r.rules
                    .into_iter()
                    .map(|x| SaRule {
                        score: one_decimal(x.score),
                        name: x.name,
                        description: x.description,
                    })
                    .collect(),
            ),
        },
        Err(e) => {
            tracing::warn!(id = %m.id, error = %e, "sa-check: spamd did not answer");
            SaResult {
                is_spam: false,
                error: e,
                score: 0.0,
                rules: None,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn scores_round_down_to_one_decimal() {
        assert_eq!(super::one_decimal(2.58), 2.5);
        assert_eq!(super::one_decimal(-0.01), -0.1);
        assert_eq!(super::one_decimal(5.0), 5.0);
    }
}
