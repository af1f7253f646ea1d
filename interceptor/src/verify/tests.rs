//! The verifier against every kind of bad token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;
use crate::keys::KeyRing;
use crate::test_support::{NOW_MS, NOW_S, Signer, claims};

fn verifier_for(signers: &[&Signer], leeway: Duration) -> Verifier {
    let keys: Vec<String> = signers.iter().map(|s| s.public_paserk()).collect();
    let keys = KeySet::from_paserk(keys.iter().map(String::as_str)).unwrap();
    Verifier::builder(keys, "tokend", "internal")
        .leeway(leeway)
        .build()
}

fn invalid(err: Invalid) -> Result<Arc<Claims>, AuthError> {
    Err(AuthError::Invalid(err))
}

#[test]
fn a_valid_token_yields_its_claims() {
    let signer = Signer::new();
    let verifier = verifier_for(&[&signer], Duration::ZERO);
    let token = signer.sign(&claims());
    let verified = verifier.verify_at(&token, NOW_MS).unwrap();
    assert_eq!(*verified, claims());
    // Cached or not, the same answer.
    assert_eq!(*verifier.verify_at(&token, NOW_MS).unwrap(), claims());
    assert_eq!(verifier.verify_uncached(&token, NOW_MS).unwrap(), claims());
}

#[test]
fn expiry_respects_the_leeway_on_both_sides() {
    let signer = Signer::new();
    let token = signer.sign(&claims());
    let exp_ms = (NOW_S + 900) * 1000;
    for leeway_s in [0, 5, 60] {
        let leeway = leeway_s * 1000;
        for cached in [false, true] {
            let verifier = verifier_for(&[&signer], Duration::from_secs(leeway_s as u64));
            let check = |at: i64| {
                if cached {
                    verifier.verify_at(&token, at).map(|c| (*c).clone())
                } else {
                    verifier.verify_uncached(&token, at)
                }
            };
            assert!(check(NOW_MS).is_ok());
            assert!(
                check(exp_ms + leeway - 1).is_ok(),
                "leeway {leeway_s}s: just before"
            );
            assert_eq!(
                check(exp_ms + leeway),
                Err(AuthError::Expired),
                "leeway {leeway_s}s: at"
            );
            assert_eq!(check(exp_ms + leeway + 3_600_000), Err(AuthError::Expired));
        }
    }
}

#[test]
fn a_cached_token_expires_on_time() {
    let signer = Signer::new();
    let verifier = verifier_for(&[&signer], Duration::ZERO);
    let token = signer.sign(&claims());
    assert!(verifier.verify_at(&token, NOW_MS).is_ok());
    let exp_ms = (NOW_S + 900) * 1000;
    assert!(verifier.verify_at(&token, exp_ms - 1).is_ok());
    assert_eq!(verifier.verify_at(&token, exp_ms), Err(AuthError::Expired));
    assert_eq!(verifier.verify_at(&token, exp_ms - 1).map(|_| ()), Ok(()));
}

#[test]
fn not_yet_valid_tokens_are_invalid_within_the_leeway_rule() {
    let signer = Signer::new();
    let mut future = claims();
    future.nbf = NOW_S + 60;
    future.iat = NOW_S + 60;
    let token = signer.sign(&future);
    let verifier = verifier_for(&[&signer], Duration::from_secs(5));
    let nbf_ms = (NOW_S + 60) * 1000;
    assert_eq!(
        verifier.verify_at(&token, nbf_ms - 5_001),
        invalid(Invalid::NotYetValid)
    );
    assert!(verifier.verify_at(&token, nbf_ms - 5_000).is_ok());
}

#[test]
fn a_token_issued_in_the_future_is_invalid() {
    let signer = Signer::new();
    let verifier = verifier_for(&[&signer], Duration::from_secs(5));
    // Valid from now (nbf), but "issued" an hour from now.
    let mut claims = claims();
    claims.iat = NOW_S + 3600;
    let token = signer.sign(&claims);
    assert_eq!(
        verifier.verify_at(&token, NOW_MS),
        invalid(Invalid::IssuedInTheFuture)
    );
    // Within the leeway, a clock a little ahead is fine.
    claims.iat = NOW_S + 5;
    assert!(verifier.verify_at(&signer.sign(&claims), NOW_MS).is_ok());
    claims.iat = NOW_S + 6;
    assert_eq!(
        verifier.verify_at(&signer.sign(&claims), NOW_MS),
        invalid(Invalid::IssuedInTheFuture)
    );
}

#[test]
fn issuer_and_audience_are_always_checked() {
    let signer = Signer::new();
    let verifier = verifier_for(&[&signer], Duration::ZERO);
    let mut other_issuer = claims();
    other_issuer.iss = "evil".into();
    assert_eq!(
        verifier.verify_at(&signer.sign(&other_issuer), NOW_MS),
        invalid(Invalid::WrongIssuer)
    );
    let mut other_audience = claims();
    other_audience.aud = "billing".into();
    let token = signer.sign(&other_audience);
    assert_eq!(
        verifier.verify_at(&token, NOW_MS),
        invalid(Invalid::WrongAudience)
    );

    let keys = KeySet::from_paserk([signer.public_paserk().as_str()]).unwrap();
    let both = Verifier::builder(keys.clone(), "tokend", "internal")
        .also_accept_audience("billing")
        .build();
    assert!(both.verify_at(&token, NOW_MS).is_ok());
    assert!(both.verify_at(&signer.sign(&claims()), NOW_MS).is_ok());
    let billing_only = Verifier::builder(keys, "tokend", "billing").build();
    assert_eq!(
        billing_only.verify_at(&signer.sign(&claims()), NOW_MS),
        invalid(Invalid::WrongAudience)
    );
}

#[test]
fn a_wrong_audience_beats_expiry() {
    // Refreshing would not fix it, so the answer is INVALID, not EXPIRED.
    let signer = Signer::new();
    let verifier = verifier_for(&[&signer], Duration::ZERO);
    let mut c = claims();
    c.aud = "billing".into();
    c.exp = NOW_S - 10;
    assert_eq!(
        verifier.verify_at(&signer.sign(&c), NOW_MS),
        invalid(Invalid::WrongAudience)
    );
}

#[test]
fn tampered_payloads_and_footers_are_invalid() {
    let signer = Signer::new();
    let other = Signer::new();
    let verifier = verifier_for(&[&signer, &other], Duration::ZERO);
    let token = signer.sign(&claims());
    let (body, footer) = token.rsplit_once('.').unwrap();

    // Flip one payload character.
    let index = "v4.public.".len() + 10;
    let mut tampered = token.clone().into_bytes();
    tampered[index] = if tampered[index] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(matches!(
        verifier.verify_at(&tampered, NOW_MS),
        Err(AuthError::Invalid(
            Invalid::BadSignature | Invalid::Malformed
        ))
    ));

    // Re-encoded claims with a new subject, old signature.
    let raw = URL_SAFE_NO_PAD.decode(&body["v4.public.".len()..]).unwrap();
    let (payload, signature) = raw.split_at(raw.len() - 64);
    let forged_payload = String::from_utf8(payload.to_vec())
        .unwrap()
        .replace("alice", "admin");
    let mut forged = forged_payload.into_bytes();
    forged.extend_from_slice(signature);
    let forged = format!("v4.public.{}.{footer}", URL_SAFE_NO_PAD.encode(forged));
    assert_eq!(
        verifier.verify_at(&forged, NOW_MS),
        invalid(Invalid::BadSignature)
    );

    // The footer names the other known key: the signature no longer matches.
    let other_footer = URL_SAFE_NO_PAD.encode(format!(r#"{{"kid":"{}"}}"#, other.kid));
    let swapped = format!("{body}.{other_footer}");
    assert_eq!(
        verifier.verify_at(&swapped, NOW_MS),
        invalid(Invalid::BadSignature)
    );

    // A footer that is not ours.
    for footer in ["", "!!!", "bm90IGpzb24", &"A".repeat(400)] {
        let token = format!("{body}.{footer}");
        assert_eq!(
            verifier.verify_at(&token, NOW_MS),
            invalid(Invalid::Malformed),
            "{footer}"
        );
    }
    // No footer at all.
    assert_eq!(
        verifier.verify_at(body, NOW_MS),
        invalid(Invalid::Malformed)
    );
}

#[test]
fn unknown_keys_and_foreign_signatures_are_invalid() {
    let signer = Signer::new();
    let attacker = Signer::new();
    let verifier = verifier_for(&[&signer], Duration::ZERO);
    // Signed by a key the verifier does not know, naming it honestly.
    assert_eq!(
        verifier.verify_at(&attacker.sign(&claims()), NOW_MS),
        invalid(Invalid::UnknownKey)
    );
    // Signed by another key, claiming to be ours.
    let lying = attacker.sign_with_kid(&claims(), &signer.kid);
    assert_eq!(
        verifier.verify_at(&lying, NOW_MS),
        invalid(Invalid::BadSignature)
    );
    // Not even a key id.
    let nonsense = attacker.sign_with_kid(&claims(), "k4.pid.nope");
    assert_eq!(
        verifier.verify_at(&nonsense, NOW_MS),
        invalid(Invalid::UnknownKey)
    );
}

#[test]
fn an_expired_token_with_a_bad_signature_is_invalid_never_expired() {
    let signer = Signer::new();
    let attacker = Signer::new();
    let verifier = verifier_for(&[&signer], Duration::ZERO);
    let mut expired = claims();
    expired.exp = NOW_S - 3600;
    let forged = attacker.sign_with_kid(&expired, &signer.kid);
    assert_eq!(
        verifier.verify_at(&forged, NOW_MS),
        invalid(Invalid::BadSignature)
    );
    // While the genuine expired token is EXPIRED.
    assert_eq!(
        verifier.verify_at(&signer.sign(&expired), NOW_MS),
        Err(AuthError::Expired)
    );
}

#[test]
fn other_token_kinds_are_malformed() {
    let signer = Signer::new();
    let verifier = verifier_for(&[&signer], Duration::ZERO);
    let token = signer.sign(&claims());
    let rest = token.strip_prefix("v4.public.").unwrap();
    let jwt = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
    for other in [
        format!("v4.local.{rest}"),
        format!("v3.public.{rest}"),
        format!("v2.public.{rest}"),
        format!("V4.PUBLIC.{rest}"),
        jwt.to_string(),
        String::new(),
        "v4.public.".into(),
        "v4.public..".into(),
        format!("v4.public.{rest}.extra"),
    ] {
        assert!(
            matches!(
                verifier.verify_at(&other, NOW_MS),
                Err(AuthError::Invalid(_))
            ),
            "{other}"
        );
    }
}

#[test]
fn oversized_and_non_ascii_tokens_are_malformed() {
    let signer = Signer::new();
    let verifier = verifier_for(&[&signer], Duration::ZERO);
    let token = signer.sign(&claims());
    let huge = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
    assert_eq!(
        verifier.verify_at(&huge, NOW_MS),
        invalid(Invalid::Malformed)
    );
    let mut big_claims = claims();
    big_claims.scope = "s ".repeat(3000);
    let big = signer.sign(&big_claims);
    assert!(big.len() > MAX_TOKEN_LEN);
    assert_eq!(
        verifier.verify_at(&big, NOW_MS),
        invalid(Invalid::Malformed)
    );
    let unicode = token.replacen('A', "Ä", 1);
    assert!(matches!(
        verifier.verify_at(&unicode, NOW_MS),
        Err(AuthError::Invalid(_))
    ));
    assert!(matches!(
        verifier.verify_at("🦀.🦀.🦀", NOW_MS),
        Err(AuthError::Invalid(_))
    ));
}

#[test]
fn claims_that_are_not_ours_are_invalid() {
    let signer = Signer::new();
    let verifier = verifier_for(&[&signer], Duration::ZERO);
    let footer = serde_json::to_vec(&Footer {
        kid: signer.kid.clone(),
    })
    .unwrap();
    for payload in [
        br#"{"sub":"alice"}"#.as_slice(),
        br#"not json"#,
        br#"{"iss":"tokend","sub":"a","aud":"internal","exp":1,"iat":1,"nbf":1,"jti":"j"}"#,
    ] {
        let token = signer.sign_raw(payload, &footer);
        assert_eq!(
            verifier.verify_at(&token, NOW_MS),
            invalid(Invalid::BadClaims)
        );
    }
}

#[test]
fn keys_replaced_invalidate_cached_verifications() {
    let signer = Signer::new();
    let keys = KeySet::from_paserk([signer.public_paserk().as_str()]).unwrap();
    let verifier = Verifier::builder(keys.clone(), "tokend", "internal").build();
    let token = signer.sign(&claims());
    assert!(verifier.verify_at(&token, NOW_MS).is_ok());
    // The key is withdrawn: the cached success must not survive it.
    keys.replace(KeyRing::empty());
    assert_eq!(
        verifier.verify_at(&token, NOW_MS),
        invalid(Invalid::UnknownKey)
    );
}

#[test]
fn a_synced_key_set_without_keys_refuses_with_keys_unavailable() {
    let signer = Signer::new();
    let keys = KeySet::synced(Duration::from_secs(1));
    let verifier = Verifier::builder(keys.clone(), "tokend", "internal").build();
    let token = signer.sign(&claims());
    assert_eq!(
        verifier.verify_at(&token, NOW_MS),
        Err(AuthError::KeysUnavailable)
    );
    assert_eq!(
        verifier.verify_at("garbage", NOW_MS),
        invalid(Invalid::Malformed),
        "shape is checked first"
    );
    keys.replace(KeyRing::from_paserk([signer.public_paserk().as_str()]).unwrap());
    assert!(verifier.verify_at(&token, NOW_MS).is_ok());
}

#[test]
fn revoked_sessions_are_refused_even_from_the_cache() {
    let signer = Signer::new();
    let revocations = RevocationList::default();
    let keys = KeySet::from_paserk([signer.public_paserk().as_str()]).unwrap();
    let verifier = Verifier::builder(keys, "tokend", "internal")
        .revocations(revocations.clone())
        .clock(FixedClock(NOW_MS))
        .build();
    let token = signer.sign(&claims());
    assert!(verifier.verify(&token).is_ok());
    revocations.revoke_session("sid-1", NOW_MS + 900_000, NOW_MS);
    assert_eq!(verifier.verify(&token), Err(AuthError::Revoked));
    assert_eq!(verifier.verify_uncached(&token, NOW_MS).map(|_| ()), Ok(()));
}

#[test]
fn the_injected_clock_is_used() {
    let signer = Signer::new();
    let keys = KeySet::from_paserk([signer.public_paserk().as_str()]).unwrap();
    let token = signer.sign(&claims());
    let late = Verifier::builder(keys.clone(), "tokend", "internal")
        .clock(FixedClock((NOW_S + 10_000) * 1000))
        .build();
    assert_eq!(late.verify(&token), Err(AuthError::Expired));
    let on_time = Verifier::builder(keys, "tokend", "internal")
        .clock(FixedClock(NOW_MS))
        .build();
    assert!(on_time.verify(&token).is_ok());
}

struct FixedClock(i64);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0 as u64)
    }
}

/// A token bound to the certificate `der`.
fn bound_to(signer: &Signer, der: &[u8]) -> String {
    let mut bound = claims();
    bound.cnf = Some(crate::token::Confirmation {
        x5t_s256: crate::certs::thumbprint(der),
    });
    signer.sign(&bound)
}

#[test]
fn the_obvious_methods_refuse_a_bound_token_without_its_certificate() {
    let signer = Signer::new();
    let keys = KeySet::from_paserk([signer.public_paserk().as_str()]).unwrap();
    let verifier = Verifier::builder(keys, "tokend", "internal")
        .clock(FixedClock(NOW_MS))
        .build();
    let der = b"the client's certificate".to_vec();
    let token = bound_to(&signer, &der);

    // A thief holding only the token: `verify` and `verify_async` fail closed.
    assert_eq!(verifier.verify(&token), Err(AuthError::BindingMismatch));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        runtime.block_on(verifier.verify_async(&token)),
        Err(AuthError::BindingMismatch)
    );
    // Also once the token is in the cache (the binding is per call).
    assert!(verifier.verify_claims(&token).is_ok());
    assert_eq!(verifier.verify(&token), Err(AuthError::BindingMismatch));
    // Another certificate is no better than none.
    let other: PeerCertificates = Arc::new(vec![b"another certificate".to_vec().into()]);
    assert_eq!(
        verifier.verify_peer(&token, Some(&other)),
        Err(AuthError::BindingMismatch)
    );
    // Its own certificate passes, and so does an unbound token without one.
    let own: PeerCertificates = Arc::new(vec![der.into()]);
    assert!(verifier.verify_peer(&token, Some(&own)).is_ok());
    assert!(verifier.verify(&signer.sign(&claims())).is_ok());
}
