//! What the Mailpit API reaches beyond the store ([`intake_http::MailpitServices`]), built
//! once at start: the chaos triggers (the same object the SMTP checks and authenticators
//! roll), the default listener's delivery targets for `POST /api/v1/send`, the `[relay]`
//! target for releases (`mailpit.release`), and spamd's report for `sa-check` (`[spamd]`).

use std::sync::Arc;

use anyhow::Context;
use futures_util::FutureExt;
use intake_delivery::TargetSet;
use intake_http::{MailpitServices, Release, SpamReport, SpamRule};

use crate::config::Settings;

/// The Mailpit API's services from the settings, over the targets built for SMTP.
pub(super) fn services(
    settings: &Settings,
    targets: &TargetSet,
    chaos: Arc<intake_core::Chaos>,
) -> anyhow::Result<MailpitServices> {
    // Mail injected with `send` goes where the default listener's mail goes.
    let send_to = targets
        .pick(&settings.delivery.targets)
        .context("the targets of POST /api/v1/send (delivery.targets)")?;
    let release = match (
        &settings.http.mailpit_release,
        &settings.delivery.sections.relay,
    ) {
        (true, Some(relay)) => Some(Release {
            relay: targets
                .target("relay")
                .context("mailpit.release needs the [relay] target")?,
            server: relay.server.clone(),
        }),
        _ => None,
    };
    let spamd = &settings.policy.spamd;
    let spamassassin = spamd.enabled.then(|| {
        let cfg = spamd.clone();
        Arc::new(move |raw: bytes::Bytes| {
            let cfg = cfg.clone();
            async move {
                let r = intake_policy::spamd_report::report(&cfg, &raw).await?;
                Ok(SpamReport {
                    spam: r.spam,
                    score: r.score,
                    rules: r
                        .rules
                        .into_iter()
                        .map(|x| SpamRule {
                            name: x.name,
                            score: x.points,
                            description: x.description,
                        })
                        .collect(),
                })
            }
            .boxed()
        }) as intake_http::SpamAssassin
    });
    let domains = settings.smtp.domains.clone();
    Ok(MailpitServices {
        chaos,
        targets: Some(send_to),
        domains: Some(Arc::new(move |d: &str| domains.accepts(d))),
        hostname: settings.smtp.hostname.clone(),
        release,
        spamassassin,
    })
}
