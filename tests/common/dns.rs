//! An in-memory name server for tests: A records the test sets and changes,
//! served over UDP and TCP on one ephemeral port of 127.0.0.1.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// Records' TTL: resolvers ask again every second.
pub const TTL: u32 = 1;

/// A name server for a few A records, changed by the test.
#[derive(Clone, Default)]
pub struct Zone {
    records: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>,
    /// Answer every query with SERVFAIL (a broken name server).
    failing: Arc<Mutex<bool>>,
}

impl Zone {
    /// Sets `name`'s A records (none: the name does not exist).
    pub fn set(&self, name: &str, addrs: &[&str]) {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self.records
            .lock()
            .unwrap()
            .insert(format!("{}.", name.to_ascii_lowercase()), addrs);
    }

    pub fn fail(&self, failing: bool) {
        *self.failing.lock().unwrap() = failing;
    }

    /// The answer to one query message.
    fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let query = Message::from_vec(query).ok()?;
        let mut response = Message::response(query.metadata.id, query.metadata.op_code);
        response.metadata.recursion_desired = query.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.authoritative = true;
        response.queries = query.queries.clone();
        if *self.failing.lock().unwrap() {
            response.metadata.response_code = ResponseCode::ServFail;
            return response.to_vec().ok();
        }
        let q = query.queries.first()?;
        let name = q.name().to_ascii().to_ascii_lowercase();
        let records = self.records.lock().unwrap();
        match records.get(&name) {
            Some(addrs) if !addrs.is_empty() => {
                if q.query_type() == RecordType::A {
                    for ip in addrs {
                        response.answers.push(Record::from_rdata(
                            q.name().clone(),
                            TTL,
                            RData::from(*ip),
                        ));
                    }
                }
                // AAAA: no such records (NOERROR, empty).
            }
            _ => response.metadata.response_code = ResponseCode::NXDomain,
        }
        debug_assert_eq!(response.metadata.message_type, MessageType::Response);
        response.to_vec().ok()
    }

    /// Serves on 127.0.0.1, UDP and TCP on one ephemeral port, until the test
    /// ends; returns the address.
    pub async fn serve(&self) -> SocketAddr {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let zone = self.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                if let Some(reply) = zone.answer(&buf[..n]) {
                    let _ = udp.send_to(&reply, from).await;
                }
            }
        });
        let zone = self.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let zone = zone.clone();
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 2];
                        if stream.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                        if stream.read_exact(&mut query).await.is_err() {
                            return;
                        }
                        let Some(reply) = zone.answer(&query) else {
                            return;
                        };
                        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&reply);
                        if stream.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }
}
