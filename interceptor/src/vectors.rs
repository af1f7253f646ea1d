//! The official PASETO `v4.public` and PASERK `k4.public` / `k4.pid` test
//! vectors (github.com/paseto-standard/test-vectors: `v4.json`,
//! `PASERK/k4.public.json`, `PASERK/k4.pid.json`), including those that
//! must fail.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pasetors::keys::AsymmetricPublicKey;
use pasetors::paserk::FormatAsPaserk;
use pasetors::version4::V4;

use crate::error::Invalid;
use crate::keys::{KeyRing, key_id};
use crate::verify::verify_signature;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn public(hex_key: &str) -> AsymmetricPublicKey<V4> {
    AsymmetricPublicKey::<V4>::from(&hex(hex_key)).unwrap()
}

const V4_PUBLIC_KEY: &str = "1eb9dbbbbc047c03fd70604e0071f0987e16b28b757225c11f00415d0e20b1a2";
const V4_PAYLOAD: &str =
    "{\"data\":\"this is a signed message\",\"exp\":\"2022-01-01T00:00:00+00:00\"}";

#[test]
fn v4_public_tokens_verify_against_their_key() {
    let key = public(V4_PUBLIC_KEY);
    // 4-S-1: no footer, no implicit assertion.
    let s1 = "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCswMDowMCJ9bg_XBBzds8lTZShVlwwKSgeKpLT3yukTw6JUz3W4h_ExsQV-P0V54zemZDcAxFaSeef1QlXEFtkqxT1ciiQEDA";
    // 4-S-2: a footer.
    let s2 = "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCswMDowMCJ9v3Jt8mx_TdM2ceTGoqwrh4yDFn0XsHvvV_D0DtwQxVrJEBMl0F2caAdgnpKlt4p7xBnx1HcO-SPo8FPp214HDw.eyJraWQiOiJ6VmhNaVBCUDlmUmYyc25FY1Q3Z0ZUaW9lQTlDT2NOeTlEZmdMMVc2MGhhTiJ9";
    // 4-S-3: a footer and an implicit assertion.
    let s3 = "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCswMDowMCJ9NPWciuD3d0o5eXJXG5pJy-DiVEoyPYWs1YSTwWHNJq6DZD3je5gf-0M4JR9ipdUSJbIovzmBECeaWmaqcaP0DQ.eyJraWQiOiJ6VmhNaVBCUDlmUmYyc25FY1Q3Z0ZUaW9lQTlDT2NOeTlEZmdMMVc2MGhhTiJ9";
    let s3_implicit = b"{\"test-vector\":\"4-S-3\"}";
    assert_eq!(verify_signature(&key, s1, &[]).unwrap(), V4_PAYLOAD);
    assert_eq!(verify_signature(&key, s2, &[]).unwrap(), V4_PAYLOAD);
    assert_eq!(verify_signature(&key, s3, s3_implicit).unwrap(), V4_PAYLOAD);
    // The implicit assertion is signed: without it, or with another, no.
    assert_eq!(verify_signature(&key, s3, &[]), Err(Invalid::BadSignature));
    assert_eq!(
        verify_signature(&key, s3, b"{\"test-vector\":\"4-S-2\"}"),
        Err(Invalid::BadSignature)
    );
    // The footer is signed: 4-S-2's signature with 4-S-1's (empty) footer.
    let (body, _footer) = s2.rsplit_once('.').unwrap();
    assert_eq!(
        verify_signature(&key, body, &[]),
        Err(Invalid::BadSignature)
    );
    // Another key.
    let other = public("707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f");
    assert_eq!(
        verify_signature(&other, s1, &[]),
        Err(Invalid::BadSignature)
    );
}

#[test]
fn v4_public_failure_vectors_are_refused() {
    let key = public(V4_PUBLIC_KEY);
    // 4-F-1: a v4.local token handed to public verification.
    let f1 = "v4.local.vngXfCISbnKgiP6VWGuOSlYrFYU300fy9ijW33rznDYgxHNPwWluAY2Bgb0z54CUs6aYYkIJ-bOOOmJHPuX_34Agt_IPlNdGDpRdGNnBz2MpWJvB3cttheEc1uyCEYltj7wBQQYX.YXJiaXRyYXJ5LXN0cmluZy10aGF0LWlzbid0LWpzb24";
    assert!(verify_signature(&key, f1, b"{\"test-vector\":\"4-F-1\"}").is_err());
    // 4-F-2: a v4.public token whose signature does not hold.
    let f2 = "v4.public.eyJpbnZhbGlkIjoidGhpcyBzaG91bGQgbmV2ZXIgZGVjb2RlIn22Sp4gjCaUw0c7EH84ZSm_jN_Qr41MrgLNu5LIBCzUr1pn3Z-Wukg9h3ceplWigpoHaTLcwxj0NsI1vjTh67YB.eyJraWQiOiJ6VmhNaVBCUDlmUmYyc25FY1Q3Z0ZUaW9lQTlDT2NOeTlEZmdMMVc2MGhhTiJ9";
    assert!(verify_signature(&key, f2, b"{\"test-vector\":\"4-F-2\"}").is_err());
    // Other versions are not v4.
    let v3 = f2.replacen("v4.", "v3.", 1);
    assert_eq!(verify_signature(&key, &v3, &[]), Err(Invalid::Malformed));
}

#[test]
fn k4_public_vectors() {
    let valid = [
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "k4.public.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        (
            "707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f",
            "k4.public.cHFyc3R1dnd4eXp7fH1-f4CBgoOEhYaHiImKi4yNjo8",
        ),
        (
            "707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e90",
            "k4.public.cHFyc3R1dnd4eXp7fH1-f4CBgoOEhYaHiImKi4yNjpA",
        ),
    ];
    for (key, paserk) in valid {
        let mut text = String::new();
        public(key).fmt(&mut text).unwrap();
        assert_eq!(text, paserk);
        let mut ring = KeyRing::empty();
        let id = ring.insert(paserk, None).expect(paserk);
        assert_eq!(ring.get(&id).map(|k| k.as_bytes().to_vec()), Some(hex(key)));
    }
    // k4.public-fail-1: 33 bytes (a k3 key) must not pass as k4.
    let fail = hex(
        "02707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
    );
    assert!(AsymmetricPublicKey::<V4>::from(&fail).is_err());
    let mut ring = KeyRing::empty();
    assert!(
        ring.insert(
            &format!("k4.public.{}", URL_SAFE_NO_PAD.encode(&fail)),
            None
        )
        .is_err()
    );
    assert!(
        ring.insert(
            "k3.public.cHFyc3R1dnd4eXp7fH1-f4CBgoOEhYaHiImKi4yNjo8",
            None
        )
        .is_err()
    );
    assert!(ring.is_empty());
}

#[test]
fn k4_pid_vectors() {
    let valid = [
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "k4.pid.S_XQmeEwHbbvRmiyfXfHYpLGjXGzjTRSDoT1YtTakWFE",
        ),
        (
            "707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f",
            "k4.pid.9ShR3xc8-qVJ_di0tc9nx0IDIqbatdeM2mqLFBJsKRHs",
        ),
        (
            "707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e90",
            "k4.pid.-nyvbaTz8U6TQz7OZWW-iB3va31iAxIpUgzUcVQVmW9A",
        ),
    ];
    for (key, pid) in valid {
        assert_eq!(key_id(&public(key)), pid);
    }
    // k4.pid-fail-1 (31 bytes) and -fail-2 (a k3 key): no key, so no id.
    for bad in [
        "707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e",
        "02707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
    ] {
        assert!(AsymmetricPublicKey::<V4>::from(&hex(bad)).is_err());
    }
}
