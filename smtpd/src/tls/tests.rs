#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;

fn key() -> TicketKey {
    TicketKey::generate().unwrap()
}

#[test]
fn tickets_open_with_the_current_or_previous_key_only() {
    let (k1, k2, k3) = (key(), key(), key());
    let old = SharedTicketer::new(&k1, None, 3600).unwrap();
    let t1 = old.encrypt(b"session state").unwrap();
    assert_eq!(old.decrypt(&t1).unwrap(), b"session state");
    let rotated = SharedTicketer::new(&k2, Some(&k1), 3600).unwrap();
    assert_eq!(
        rotated.decrypt(&t1).unwrap(),
        b"session state",
        "previous key"
    );
    let t2 = rotated.encrypt(b"x").unwrap();
    assert!(old.decrypt(&t2).is_none(), "unknown key id");
    let stranger = SharedTicketer::new(&k3, None, 3600).unwrap();
    assert!(stranger.decrypt(&t1).is_none());
    // Tampering, truncation and garbage are refused.
    let mut bad = t1.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(old.decrypt(&bad).is_none());
    assert!(old.decrypt(&t1[..20]).is_none());
    assert!(old.decrypt(&[]).is_none());
    assert_ne!(
        old.encrypt(b"a").unwrap(),
        old.encrypt(b"a").unwrap(),
        "fresh nonces"
    );
    assert_eq!(old.lifetime(), 3600);
}

#[test]
fn a_context_builds_from_a_bundle_with_both_key_types() {
    let dir = std::env::temp_dir().join(format!("sloop-smtpd-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut pairs = Vec::new();
    for (name, alg) in [
        ("rsa", &rcgen::PKCS_RSA_SHA256),
        ("ec", &rcgen::PKCS_ECDSA_P256_SHA256),
    ] {
        let Ok(k) = rcgen::KeyPair::generate_for(alg) else {
            // rcgen with ring cannot generate RSA keys: ECDSA only then.
            continue;
        };
        let cert = rcgen::CertificateParams::new(vec!["mx.test".into()])
            .unwrap()
            .self_signed(&k)
            .unwrap();
        let files = sloop_common::config::CertKeyFiles {
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert_file, cert.pem()).unwrap();
        std::fs::write(&files.key_file, k.serialize_pem()).unwrap();
        pairs.push(tls_material::load_pair(&files, tls_material::unix_now()).unwrap());
    }
    let b = Bundle {
        pairs,
        ticket_current: Some(key()),
        ticket_previous: None,
        ticket_lifetime: 100,
    };
    let ctx = TlsContext::from_bundle(&Bundle::decode(&b.encode()).unwrap()).unwrap();
    assert!(ctx.config.ticketer.enabled());
    let info = TlsInfo {
        version: "TLSv1.2",
        cipher: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
        bits: 128,
        resumed: false,
    };
    assert_eq!(
        info.describe(),
        "TLSv1.2 with cipher TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (128/128 bits)"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_server_prefers_aes_128_then_aes_256_then_chacha_and_tls13_first() {
    use rustls::CipherSuite as C;
    let mut suites = rustls::crypto::aws_lc_rs::default_provider().cipher_suites;
    server_cipher_order(&mut suites);
    let order: Vec<C> = suites.iter().map(|s| s.suite()).collect();
    assert_eq!(
        order,
        [
            C::TLS13_AES_128_GCM_SHA256,
            C::TLS13_AES_256_GCM_SHA384,
            C::TLS13_CHACHA20_POLY1305_SHA256,
            C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
    );
}
