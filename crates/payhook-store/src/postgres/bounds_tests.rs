//! The PostgreSQL store's time bounds and how its errors are told apart (`postgres.rs`).

use super::*;
use crate::postgres::{migrate, PgStore};
use crate::seal::Sealer;

#[test]
fn the_bounds_are_set_unless_the_url_sets_them() {
    let mut c = migrate::config("postgres://u@db/x", Some("payhook")).expect("a URL");
    bound(&mut c);
    assert_eq!(c.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
    assert_eq!(c.get_keepalives_idle(), KEEPALIVE_IDLE);
    assert_eq!(c.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
    let options = c.get_options().expect("options");
    assert!(options.starts_with("-csearch_path=payhook "), "{options}");
    for set in [
        "-cstatement_timeout=5000",
        "-cidle_in_transaction_session_timeout=10000",
        "-ctcp_user_timeout=5000",
        "-ctcp_keepalives_idle=2",
    ] {
        assert!(options.contains(set), "{set} in {options}");
    }

    let url = "postgres://u@db/x?tcp_user_timeout=2&keepalives_idle=30\
               &options=-cstatement_timeout%3D60000";
    let mut c = migrate::config(url, None).expect("a URL");
    bound(&mut c);
    assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(2)));
    assert_eq!(c.get_keepalives_idle(), Duration::from_secs(30));
    let options = c.get_options().expect("options");
    assert_eq!(options.matches("statement_timeout").count(), 1, "{options}");
    assert!(options.contains("-cstatement_timeout=60000"), "{options}");
}

#[test]
fn sqlstates_of_a_server_that_is_gone() {
    for code in ["08000", "08003", "08006", "57P01", "57P02", "57P03", "53300", "57014"] {
        assert!(server_gone(code), "{code}");
    }
    for code in ["23505", "40001", "40P01", "53100", "42P01"] {
        assert!(!server_gone(code), "{code}");
    }
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    // Port 1 on loopback: nothing listens, the kernel refuses at once.
    let url = "postgres://postgres@127.0.0.1:1/x";
    match PgStore::connect(url, None, Sealer::random()).await {
        Err(StoreError::Unavailable(cause)) => assert!(cause.contains("refused"), "{cause}"),
        Err(e) => panic!("refused connection as {e:?}"),
        Ok(_) => panic!("connected to port 1"),
    }
}
