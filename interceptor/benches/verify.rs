//! What verification costs: our cold path (a token never seen before) next to
//! a bare `pasetors::public::verify`, the cached path (a token seen before),
//! and the cached path over mTLS with an unbound and a certificate-bound
//! token. `make bench` reads the estimates criterion writes.

// Test infrastructure: a failed expectation here is a failed test or
// benchmark run, so unwrap, expect and panic are the right tools.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use pasetors::claims::ClaimsValidationRules;
use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, Generate};
use pasetors::paserk::FormatAsPaserk;
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use pasetors::{Public, public};
use rustls_pki_types::CertificateDer;
use tokend_interceptor::certs::thumbprint;
use tokend_interceptor::keys::KeySet;
use tokend_interceptor::keys::key_id;
use tokend_interceptor::token::Confirmation;
use tokend_interceptor::token::Footer;
use tokend_interceptor::verify::PeerCertificates;
use tokend_interceptor::{Claims, Verifier};

/// Tokens shaped like tokend's: same claims, same footer.
fn tokens(pair: &AsymmetricKeyPair<V4>, count: usize) -> Vec<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let footer = serde_json::to_vec(&Footer {
        kid: key_id(&pair.public),
    })
    .unwrap();
    (0..count)
        .map(|i| {
            let claims = Claims::new(
                "tokend",
                format!("user-{i}"),
                "internal",
                format!("jti-{i:016}"),
                now,
                now + 3600,
            )
            .with_session(format!("sid-{i:018}"))
            .with_scope("read write")
            .with_account_version(now * 1000);
            let payload = serde_json::to_vec(&claims).unwrap();
            PublicToken::sign(&pair.secret, &payload, Some(&footer), None).unwrap()
        })
        .collect()
}

fn paserk(key: &AsymmetricPublicKey<V4>) -> String {
    let mut text = String::new();
    key.fmt(&mut text).unwrap();
    text
}

fn verification(c: &mut Criterion) {
    let pair = AsymmetricKeyPair::<V4>::generate().unwrap();
    let pool = tokens(&pair, 512);
    let keys = KeySet::from_paserk([paserk(&pair.public).as_str()]).unwrap();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    let cold = Verifier::builder(keys.clone(), "tokend", "internal")
        .cache_capacity(0)
        .build();
    let mut i = 0;
    c.bench_function("verify_cold", |b| {
        b.iter(|| {
            i = (i + 1) % pool.len();
            black_box(cold.verify_uncached(black_box(&pool[i]), now_ms).unwrap())
        })
    });

    let rules = ClaimsValidationRules::new();
    let mut i = 0;
    c.bench_function("pasetors_verify", |b| {
        b.iter(|| {
            i = (i + 1) % pool.len();
            let untrusted = UntrustedToken::<Public, V4>::try_from(black_box(&pool[i])).unwrap();
            black_box(public::verify(&pair.public, &untrusted, &rules, None, None).unwrap())
        })
    });

    let cached = Verifier::builder(keys, "tokend", "internal").build();
    let token = &pool[0];
    cached.verify_at(token, now_ms).unwrap();
    c.bench_function("verify_cached", |b| {
        b.iter(|| black_box(cached.verify_at(black_box(token), now_ms).unwrap()))
    });

    // Over mTLS: the same connection presents an unbound token, or a token
    // bound to its certificate (RFC 8705), again and again.
    let der: Vec<u8> = (0..1100u32).map(|i| (i * 7 % 251) as u8).collect();
    let peer: PeerCertificates = Arc::new(vec![CertificateDer::from(der.clone())]);
    let bound = sign_one(
        &pair,
        now_ms / 1000,
        Some(Confirmation::new(thumbprint(&der))),
    );
    cached.verify_at(&bound, now_ms).unwrap();
    c.bench_function("verify_mtls_plain", |b| {
        b.iter(|| {
            black_box(
                cached
                    .verify_from(black_box(token), now_ms, Some(&peer))
                    .unwrap(),
            )
        })
    });
    c.bench_function("verify_mtls_bound", |b| {
        b.iter(|| {
            black_box(
                cached
                    .verify_from(black_box(&bound), now_ms, Some(&peer))
                    .unwrap(),
            )
        })
    });
}

/// One token issued at `now` (seconds), bound to `cnf` if given.
fn sign_one(pair: &AsymmetricKeyPair<V4>, now: i64, cnf: Option<Confirmation>) -> String {
    let footer = serde_json::to_vec(&Footer {
        kid: key_id(&pair.public),
    })
    .unwrap();
    let mut claims = Claims::new("tokend", "billing", "internal", "bound", now, now + 3600)
        .with_scope("read")
        .with_account_version(now * 1000);
    if let Some(cnf) = cnf {
        claims = claims.with_confirmation(cnf.x5t_s256());
    }
    let payload = serde_json::to_vec(&claims).unwrap();
    PublicToken::sign(&pair.secret, &payload, Some(&footer), None).unwrap()
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(50);
    targets = verification
}
criterion_main!(benches);
