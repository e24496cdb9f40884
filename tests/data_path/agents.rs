//! Agents (`<agent>`) end to end: each host's agent is a small TCP server
//! here answering the word a test sets; clients through the balancer show
//! what the agent's words do: `50%` halves a host's share, `drain` and
//! `down` stop new connections (down marks the host bad), `up` puts it back,
//! and an agent that stops answering changes nothing.

use crate::checks::transition;
use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::binary::Txlb;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// An agent answering the current `word` (a line) to every connection;
/// `None`: it accepts and closes without a word.
async fn agent(word: Arc<Mutex<Option<String>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let line = word.lock().unwrap().clone();
            if let Some(line) = line {
                let _ = s.write_all(format!("{line}\n").as_bytes()).await;
            }
        }
    });
    addr
}

/// How many of `n` clients each host served.
async fn shares(lb: SocketAddr, n: usize) -> (usize, usize) {
    let (mut h1, mut h2) = (0, 0);
    for _ in 0..n {
        let (name, _) = common::which_backend(lb).await;
        match name.as_str() {
            "h1" => h1 += 1,
            "h2" => h2 += 1,
            other => panic!("served by {other:?}"),
        }
    }
    (h1, h2)
}

#[tokio::test]
async fn an_agents_words_drain_scale_down_and_bring_back_its_host() {
    let h1 = common::named_backend("h1", common::Hold::Close).await;
    let h2 = common::named_backend("h2", common::Hold::Close).await;
    let word1 = Arc::new(Mutex::new(Some("up".to_string())));
    let word2 = Arc::new(Mutex::new(Some("ready".to_string())));
    let a1 = agent(word1.clone()).await;
    let a2 = agent(word2.clone()).await;
    let user = &common::admin::users()[0];
    let xml = format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" scheduler=\"wrr\" enable=\"true\">\n      \
         <agent interval=\"0.1\" timeout=\"0.5\"/>\n      \
         <host name=\"h1\" ip=\"{h1}\" agentPort=\"{}\"/>\n      \
         <host name=\"h2\" ip=\"{h2}\" agentPort=\"{}\"/>\n    </group>\n  </service>\n\
         <admin><web listen=\"127.0.0.1:0\" enable=\"true\"/>\
         <user name=\"{}\" password=\"{}\" access=\"full\"/></admin>\n</config>\n",
        a1.port(),
        a2.port(),
        user.name,
        user.password_hash
    );
    let txlb = Txlb::start_xml(&xml, None);
    let lb = txlb.listener();
    transition(&txlb, "host agent said", "host=\"h1\" state=\"up\"", 0).await;
    let (a, b) = shares(lb, 40).await;
    assert!(a >= 15 && b >= 15, "even: {a} / {b}");

    // 50%: h1 gets half of what h2 gets (a third of the clients).
    let skip = txlb.log_len();
    *word1.lock().unwrap() = Some("up 50%".into());
    transition(&txlb, "host agent said", "weight_percent=50", skip).await;
    let base = txlb.logged("admin web server up", "url").await;
    let base = base.trim_end_matches('/').to_string();
    let metrics = || async {
        common::admin::get_as(&base, common::admin::FULL, "/metrics")
            .await
            .1
    };
    let h1 = "service=\"svc\",group=\"g\",host=\"h1\"";
    let text = metrics().await;
    assert!(
        text.contains(&format!("txlb_host_agent_weight_percent{{{h1}}} 50\n"))
            && text.contains(&format!("txlb_host_agent_state{{{h1},state=\"up\"}} 1\n"))
            && text.contains(&format!("txlb_host_agent_answering{{{h1}}} 1\n")),
        "{text}"
    );
    let (a, b) = shares(lb, 300).await;
    assert!((70..=130).contains(&a), "a third to h1 at 50%: {a} / {b}");

    // drain: no new connections to h1.
    let skip = txlb.log_len();
    *word1.lock().unwrap() = Some("drain".into());
    transition(&txlb, "host agent said", "state=\"drain\"", skip).await;
    assert_eq!(shares(lb, 20).await, (0, 20), "drained");
    let text = metrics().await;
    assert!(
        text.contains(&format!(
            "txlb_host_agent_state{{{h1},state=\"drain\"}} 1\n"
        )) && text.contains(&format!("txlb_host_agent_state{{{h1},state=\"up\"}} 0\n")),
        "{text}"
    );

    // A reply without drain (only a weight) puts it back, whole.
    let skip = txlb.log_len();
    *word1.lock().unwrap() = Some("100%".into());
    transition(&txlb, "host agent said", "host=\"h1\" state=\"up\"", skip).await;
    let (a, _) = shares(lb, 20).await;
    assert!(a >= 7, "back: {a}");

    // down: h1 is bad (the agent's reason); up: back in rotation.
    let skip = txlb.log_len();
    *word1.lock().unwrap() = Some("down#disk full".into());
    let bad = transition(&txlb, "host marked bad", "host=\"h1\"", skip).await;
    assert!(bad.contains("reason=\"agent: down\""), "{bad}");
    assert_eq!(shares(lb, 20).await, (0, 20), "down");
    let skip = txlb.log_len();
    *word1.lock().unwrap() = Some("up".into());
    transition(&txlb, "host back in rotation", "host=\"h1\"", skip).await;

    // An agent that says nothing changes nothing: h1 drained by word, then
    // silent, stays drained; h2 silent stays up.
    let skip = txlb.log_len();
    *word1.lock().unwrap() = Some("maint".into());
    transition(&txlb, "host agent said", "state=\"maint\"", skip).await;
    *word1.lock().unwrap() = None;
    *word2.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(shares(lb, 10).await, (0, 10), "maint holds while silent");
    let text = metrics().await;
    assert!(
        text.contains(&format!("txlb_host_agent_answering{{{h1}}} 0\n"))
            && text.contains(&format!(
                "txlb_host_agent_state{{{h1},state=\"maint\"}} 1\n"
            )),
        "{text}"
    );
    assert_eq!(txlb.count("host marked bad"), 1, "{}", txlb.log_text());
}
