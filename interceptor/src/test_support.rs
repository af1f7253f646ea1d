//! Signing tokens the way tokend does, for the crate's own tests.

use pasetors::keys::{AsymmetricKeyPair, Generate};
use pasetors::paserk::FormatAsPaserk;
use pasetors::version4::{PublicToken, V4};

use crate::keys::key_id;
use crate::token::{Claims, Footer};

pub(crate) const NOW_S: i64 = 1_800_000_000;
pub(crate) const NOW_MS: i64 = NOW_S * 1000;

/// Signs tokens like tokend does.
pub(crate) struct Signer {
    pub(crate) pair: AsymmetricKeyPair<V4>,
    pub(crate) kid: String,
}

impl Signer {
    pub(crate) fn new() -> Signer {
        let pair = AsymmetricKeyPair::<V4>::generate().unwrap();
        let kid = key_id(&pair.public);
        Signer { pair, kid }
    }

    pub(crate) fn public_paserk(&self) -> String {
        let mut text = String::new();
        self.pair.public.fmt(&mut text).unwrap();
        text
    }

    pub(crate) fn sign_raw(&self, payload: &[u8], footer: &[u8]) -> String {
        PublicToken::sign(&self.pair.secret, payload, Some(footer), None).unwrap()
    }

    pub(crate) fn sign_with_kid(&self, claims: &Claims, kid: &str) -> String {
        let footer = serde_json::to_vec(&Footer { kid: kid.into() }).unwrap();
        self.sign_raw(&serde_json::to_vec(claims).unwrap(), &footer)
    }

    pub(crate) fn sign(&self, claims: &Claims) -> String {
        self.sign_with_kid(claims, &self.kid)
    }
}

pub(crate) fn claims() -> Claims {
    Claims {
        iss: "tokend".into(),
        sub: "alice".into(),
        aud: "internal".into(),
        exp: NOW_S + 900,
        iat: NOW_S,
        nbf: NOW_S,
        jti: "jti-1".into(),
        sid: Some("sid-1".into()),
        scope: "read write".into(),
        av: Some(NOW_MS - 60_000),
        cnf: None,
        act: None,
    }
}
