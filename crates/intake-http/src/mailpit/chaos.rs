//! `GET /api/v1/chaos` and `PUT /api/v1/chaos`: Mailpit's chaos triggers
//! ([`intake_core::chaos`]), `{Sender, Recipient, Authentication}` each `{ErrorCode,
//! Probability}`. A PUT replaces all three: a trigger left out is reset (its default code,
//! 0 %), an `ErrorCode` of 0 is the default code. Both answer 400 `Chaos is not enabled`
//! unless `mailpit.chaos` is on, and 400 for a code outside 400-599 or a probability
//! outside 0-100 (nothing is changed then).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use intake_core::{ChaosError, Trigger, Triggers};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

/// One trigger as Mailpit writes it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TriggerShape {
    error_code: i64,
    probability: i64,
}

/// The three triggers as Mailpit writes them.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct TriggersShape {
    sender: TriggerShape,
    recipient: TriggerShape,
    authentication: TriggerShape,
}

impl From<Triggers> for TriggersShape {
    fn from(t: Triggers) -> Self {
        let shape = |x: Trigger| TriggerShape {
            error_code: x.code.into(),
            probability: x.probability.into(),
        };
        TriggersShape {
            sender: shape(t.sender),
            recipient: shape(t.recipient),
            authentication: shape(t.authentication),
        }
    }
}

impl TriggersShape {
    /// The triggers asked for, default codes for 0.
    fn triggers(&self) -> Result<Triggers, ChaosError> {
        let [s, r, a] = Triggers::DEFAULT_CODES;
        let one = |x: &TriggerShape, default: u16| {
            let code = match x.error_code {
                0 => default,
                c => u16::try_from(c).map_err(|_| ChaosError::Code)?,
            };
            let probability = u8::try_from(x.probability).map_err(|_| ChaosError::Probability)?;
            Ok(Trigger { code, probability })
        };
        Ok(Triggers {
            sender: one(&self.sender, s)?,
            recipient: one(&self.recipient, r)?,
            authentication: one(&self.authentication, a)?,
        })
    }
}

fn refused(e: ChaosError) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// The current triggers.
pub(super) async fn get(State(state): State<AppState>) -> Result<Json<TriggersShape>, ApiError> {
    let t = state.mailpit_services.chaos.triggers().map_err(refused)?;
    Ok(Json(t.into()))
}

/// Sets every trigger; answers them as they now are.
pub(super) async fn set(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<TriggersShape>, ApiError> {
    let chaos = &state.mailpit_services.chaos;
    if !chaos.is_enabled() {
        return Err(refused(ChaosError::Disabled));
    }
    let asked: TriggersShape = if body.iter().all(u8::is_ascii_whitespace) {
        TriggersShape::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?
    };
    let t = chaos
        .set(asked.triggers().map_err(refused)?)
        .map_err(refused)?;
    Ok(Json(t.into()))
}
