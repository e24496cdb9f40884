//! Helpers for admin-plane tests: a balancer with two groups behind named
//! backends, its admin server on 127.0.0.1:0, and an HTTP client with users.

use std::net::SocketAddr;
use std::time::Duration;

use txlb::BalancerHandle;
use txlb::admin::AdminSettings;
use txlb::config::{Access, AdminConfig, Config, GroupConfig, UserConfig};
use txlb::scheduler::SchedulerKind;

use super::{Hold, host, named_backend};

/// The full user and its password.
pub const FULL: (&str, &str) = ("admin", "secret");
/// The read-only user (a traditional DES hash) and its password.
pub const READONLY: (&str, &str) = ("viewer", "look");

/// Users: `admin` with a SHA-512-crypt hash, `viewer` read-only with a DES hash.
pub fn users() -> Vec<UserConfig> {
    #[allow(deprecated)] // DES is what txLoadBalancer's files hold
    let des = pwhash::unix_crypt::hash_with("ab", READONLY.1).unwrap();
    vec![
        UserConfig {
            name: FULL.0.into(),
            password_hash: txlb::admin::hash_password(FULL.1).unwrap(),
            access: Access::Full,
        },
        UserConfig {
            name: READONLY.0.into(),
            password_hash: des,
            access: Access::ReadOnly,
        },
    ]
}

/// [`users`] as `<user>` elements of an XML `<admin>`, one per line.
pub fn user_lines() -> String {
    users()
        .iter()
        .map(|u| {
            format!(
                "    <user name=\"{}\" password=\"{}\" access=\"{}\"/>\n",
                u.name,
                u.password_hash,
                u.access.name()
            )
        })
        .collect()
}

/// Service `svc` (round robin) with enabled group `g` (hosts `a`, `b`) and
/// standby group `spare` (host `s1`), each host a backend that sends its name;
/// users from [`users`].
pub async fn two_group_config() -> Config {
    let a = named_backend("a", Hold::Close).await;
    let b = named_backend("b", Hold::Close).await;
    let s1 = named_backend("s1", Hold::Close).await;
    let mut config = super::config(
        SchedulerKind::RoundRobin,
        vec![host("a", a, 1), host("b", b, 1)],
    );
    config.services[0].groups.push(GroupConfig {
        name: "spare".into(),
        scheduler: SchedulerKind::RoundRobin,
        hosts: vec![host("s1", s1, 1)].into(),
        options: Default::default(),
        check: None,
        agent: None,
    });
    config.admin = Some(AdminConfig {
        web: None,
        ssh: None,
        users: users(),
    });
    config
}

/// A running balancer and its admin server.
pub struct Admin {
    /// The balancer.
    pub handle: BalancerHandle,
    /// `http://127.0.0.1:PORT/`.
    pub base: String,
    /// A client without credentials.
    pub client: reqwest::Client,
}

impl Admin {
    /// Starts `config` and its admin server with `settings` on 127.0.0.1:0.
    pub async fn start(config: Config, settings: AdminSettings) -> Admin {
        let handle = txlb::Balancer::start(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = txlb::admin::start(handle.clone(), settings, listener)
            .await
            .unwrap();
        Admin {
            handle,
            base: server.url(),
            client: client(),
        }
    }

    /// The balancer's listener of service `svc`.
    pub fn listener(&self) -> SocketAddr {
        self.handle.local_addr("svc", None).unwrap()
    }

    /// A request as `user` (`None`: without credentials).
    pub async fn call(
        &self,
        user: Option<(&str, &str)>,
        method: reqwest::Method,
        path: &str,
        form: Option<&str>,
    ) -> (u16, String) {
        let mut request = self.client.request(
            method,
            format!("{}{}", self.base, path.trim_start_matches('/')),
        );
        if let Some((name, password)) = user {
            request = request.basic_auth(name, Some(password));
        }
        if let Some(body) = form {
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// GET as the full user.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.call(Some(FULL), reqwest::Method::GET, path, None)
            .await
    }

    /// POST a form as the full user.
    pub async fn post(&self, path: &str, form: &str) -> (u16, String) {
        self.call(Some(FULL), reqwest::Method::POST, path, Some(form))
            .await
    }
}

/// GET `base` + `path` as `user`: status and body.
pub async fn get_as(base: &str, user: (&str, &str), path: &str) -> (u16, String) {
    let response = client()
        .get(format!("{base}{path}"))
        .basic_auth(user.0, Some(user.1))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A client that follows no redirects and gives up after 10 s.
pub fn client() -> reqwest::Client {
    client_trusting(&[])
}

/// A rustls client configuration (ring provider) trusting only `roots`.
pub fn tls_client_config(
    roots: &[rustls::pki_types::CertificateDer<'static>],
) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth()
}

/// [`client`], trusting `roots` for HTTPS.
pub fn client_trusting(roots: &[rustls::pki_types::CertificateDer<'static>]) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_client_config(roots))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}
