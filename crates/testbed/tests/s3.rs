//! The SeaweedFS fixture starts a real S3 server that enforces
//! authentication, and stopping it frees its port. (S3 operations themselves
//! are exercised by tidemark-store's conformance suite.)

use std::net::SocketAddr;

use anyhow::Result;
use testbed::s3::S3Server;

fn addr_of(endpoint: &str) -> SocketAddr {
    endpoint
        .strip_prefix("http://")
        .expect("plain http endpoint")
        .parse()
        .expect("ip:port")
}

#[test]
fn server_answers_s3_refuses_anonymous_and_stops() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = S3Server::start(dir.path())?;
    let addr = addr_of(&server.endpoint);
    assert!(addr.ip().is_loopback());

    let anonymous = testbed::http::get(addr, "/")?;
    assert_eq!(anonymous.status, 403, "{}", anonymous.body);
    assert!(
        anonymous.body.contains("AccessDenied"),
        "{}",
        anonymous.body
    );
    assert!(server.log.starts_with(dir.path()) && server.log.exists());
    assert!(dir.path().join("s3.sock").exists());
    assert!(!format!("{server:?}").contains(&server.secret_key));

    let ports = server.ports();
    assert_eq!(ports.len(), 9, "eight listeners and the metrics port");
    server.stop()?;
    assert!(!testbed::wait::tcp_open(addr), "port still open after stop");
    server.stop()?; // idempotent
    for port in ports {
        for service in ["master", "volume", "filer", "s3"] {
            let socket = format!("/tmp/seaweedfs-{service}-grpc-{port}.sock");
            assert!(
                !std::path::Path::new(&socket).exists(),
                "{socket} left behind"
            );
        }
    }
    Ok(())
}

#[test]
fn shared_server_is_started_once() {
    let a = testbed::s3::shared();
    let b = testbed::s3::shared();
    assert_eq!(a.endpoint, b.endpoint);
    assert!(testbed::wait::tcp_open(addr_of(&a.endpoint)));
}
