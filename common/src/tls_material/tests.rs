#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use rcgen::{date_time_ymd, CertificateParams, KeyPair};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sloop-tlsmat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_pair(
    dir: &Path,
    name: &str,
    alg: &'static rcgen::SignatureAlgorithm,
    years: (i32, i32),
) -> CertKeyFiles {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::new(vec!["mx.example.test".to_string()]).unwrap();
    params.not_before = date_time_ymd(years.0, 1, 1);
    params.not_after = date_time_ymd(years.1, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let files = CertKeyFiles {
        cert_file: dir.join(format!("{name}.crt")),
        key_file: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert_file, cert.pem()).unwrap();
    std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
    files
}

#[test]
fn a_good_pair_loads_with_its_algorithm_and_expiry() {
    let d = temp_dir("good");
    let f = write_pair(&d, "ec", &rcgen::PKCS_ECDSA_P256_SHA256, (2020, 2090));
    let p = load_pair(&f, unix_now()).unwrap();
    assert_eq!(p.algorithm, "ECDSA");
    assert_eq!(p.not_after, days_from_civil(2090, 1, 1) * 86400);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn expired_mismatched_and_unreadable_files_are_named() {
    let d = temp_dir("bad");
    let old = write_pair(&d, "old", &rcgen::PKCS_ECDSA_P256_SHA256, (2000, 2001));
    let e = load_pair(&old, unix_now()).unwrap_err();
    assert!(matches!(e, TlsFileError::Expired { .. }), "{e}");
    assert!(e.to_string().contains("old.crt"), "{e}");
    let future = write_pair(&d, "future", &rcgen::PKCS_ECDSA_P256_SHA256, (2090, 2091));
    let e = load_pair(&future, unix_now()).unwrap_err();
    assert!(matches!(e, TlsFileError::NotYetValid { .. }), "{e}");

    let a = write_pair(&d, "a", &rcgen::PKCS_ECDSA_P256_SHA256, (2020, 2090));
    let b = write_pair(&d, "b", &rcgen::PKCS_ECDSA_P256_SHA256, (2020, 2090));
    let mixed = CertKeyFiles {
        cert_file: a.cert_file.clone(),
        key_file: b.key_file.clone(),
    };
    let e = load_pair(&mixed, unix_now()).unwrap_err();
    assert!(matches!(e, TlsFileError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("b.key") && e.to_string().contains("a.crt"));

    let missing = CertKeyFiles {
        cert_file: d.join("nope.crt"),
        key_file: a.key_file.clone(),
    };
    let e = load_pair(&missing, unix_now()).unwrap_err();
    assert!(e.to_string().contains("nope.crt: cannot read"), "{e}");

    let swapped = CertKeyFiles {
        cert_file: a.key_file.clone(),
        key_file: a.cert_file.clone(),
    };
    let e = load_pair(&swapped, unix_now()).unwrap_err();
    assert!(matches!(e, TlsFileError::NoCertificate { .. }), "{e}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn a_key_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let d = temp_dir("mode");
    let f = write_pair(&d, "k", &rcgen::PKCS_ECDSA_P256_SHA256, (2020, 2090));
    std::fs::set_permissions(&f.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(load_pair(&f, unix_now()).unwrap().warnings.len(), 1);
    std::fs::set_permissions(&f.key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(load_pair(&f, unix_now()).unwrap().warnings.is_empty());
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn the_bundle_round_trips_and_refuses_garbage() {
    let d = temp_dir("bundle");
    let f = write_pair(&d, "ec", &rcgen::PKCS_ECDSA_P256_SHA256, (2020, 2090));
    let pair = load_pair(&f, unix_now()).unwrap();
    let b = Bundle {
        pairs: vec![pair.clone()],
        ticket_current: Some(TicketKey::generate().unwrap()),
        ticket_previous: Some(TicketKey::generate().unwrap()),
        ticket_lifetime: 43200,
    };
    let wire = b.encode();
    let back = Bundle::decode(&wire).unwrap();
    assert_eq!(back.pairs.len(), 1);
    assert_eq!(back.pairs[0].key_pem, pair.key_pem);
    assert_eq!(back.pairs[0].files, f);
    assert_eq!(back.ticket_current, b.ticket_current);
    assert_eq!(back.ticket_previous, b.ticket_previous);
    assert_eq!(back.ticket_lifetime, 43200);
    assert_eq!(back.certified_keys().unwrap().len(), 1);
    assert!(Bundle::decode(b"nope").is_err());
    assert!(Bundle::decode(&wire[..wire.len() - 2]).is_err());
    assert!(!format!("{:?}", back.pairs[0]).contains("PRIVATE"));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn der_times_and_dates() {
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2000, 3, 1), 11017);
    assert_eq!(der_time(0x17, b"700101000000Z").unwrap(), 0);
    assert_eq!(
        der_time(0x18, b"20000301000001Z").unwrap(),
        11017 * 86400 + 1
    );
    assert!(der_time(0x17, b"7001010000Z").is_err());
    assert!(der_time(0x18, b"20001301000000Z").is_err());
    assert!(validity(&[0x30, 0x05, 0x01]).is_err());
}
