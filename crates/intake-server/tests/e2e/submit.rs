//! lettre (an independent client that does not share our parser) as a submitting
//! application would use it: one message, with or without TLS and a login.

use std::net::SocketAddr;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// TLS towards `name` that accepts the tests' self-signed certificates.
pub fn any_cert(name: &str) -> TlsParameters {
    TlsParameters::builder(name.into())
        .dangerous_accept_invalid_certs(true)
        .build()
        .unwrap()
}

/// One message from lettre.
pub struct Submission<'a> {
    pub tls: Tls,
    /// User, password and mechanism, or no AUTH.
    pub login: Option<(&'a str, &'a str, Mechanism)>,
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
}

impl Submission<'_> {
    /// Sends it to `addr`: `Ok` on a 250, else lettre's error text (with the reply code).
    pub async fn send(self, addr: SocketAddr) -> Result<(), String> {
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
            .port(addr.port())
            .tls(self.tls);
        if let Some((user, password, mechanism)) = self.login {
            b = b
                .credentials(Credentials::new(user.into(), password.into()))
                .authentication(vec![mechanism]);
        }
        let email = Message::builder()
            .from(self.from.parse().unwrap())
            .to(self.to.parse().unwrap())
            .subject(self.subject)
            .body("hello".to_string())
            .unwrap();
        b.build()
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
