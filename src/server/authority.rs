//! The authority a server runs: its signing and verification keys (with
//! the key-file permission rule), the password hasher, the demo accounts
//! of `--dev`, the revocation feed and account states, the exchange policy,
//! the verifier of Exchange's subject tokens and Introspect's.

use std::path::PathBuf;
use std::sync::Arc;

use tokend_interceptor::Verifier;
use tokend_interceptor::keys::KeySet;
use tracing::{info, warn};

use super::ServeError;
use crate::accounts::AccountStates;
use crate::admin::DemoAccounts;
use crate::authority::{Authority, Parts};
use crate::config::Config;
use crate::credentials::PasswordHasher;
use crate::exchange::{ExchangePolicy, PolicySource};
use crate::revocations::RevocationFeed;
use crate::store::Store;
use crate::throttle::LoginThrottle;
use crate::tokens::keys::{KeyEntry, KeyFilePolicy};
use crate::tokens::{AccessTokenIssuer, PublishedKey, SigningKey};

/// What [`build`] sets up.
pub(super) struct Built {
    /// The decisions.
    pub authority: Arc<Authority>,
    /// The demo accounts' credentials, with `--dev`.
    pub demo: Option<DemoAccounts>,
    /// The keys signed and verified with, for administrators.
    pub keys: Vec<KeyEntry>,
}

/// Builds the authority `config` describes on `store`, with the demo
/// accounts when `--dev` asked for them.
pub(super) async fn build(
    config: &Config,
    store: Store,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<Built, ServeError> {
    let key_policy = if config.allow_insecure_key_file {
        KeyFilePolicy::AllowInsecure
    } else {
        KeyFilePolicy::Strict
    };
    let key = match &config.signing_key_file {
        Some(path) => SigningKey::load(path, key_policy)?,
        None => {
            warn!(
                "no --signing-key-file: signing with an ephemeral key; every restart invalidates \
                 all access tokens. Create one with `tokend keys generate --out FILE`"
            );
            SigningKey::generate()?
        }
    };
    let verification_keys = config
        .verification_key_files
        .iter()
        .map(|path| PublishedKey::load(path, key_policy))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = crate::tokens::keys::inventory(
        key.published(),
        config.signing_key_file.as_deref(),
        &verification_keys
            .iter()
            .cloned()
            .zip(config.verification_key_files.iter().map(PathBuf::as_path))
            .collect::<Vec<_>>(),
        config.clock.now_ms(),
    );
    let hasher = PasswordHasher::new(config.password_hash_threads, config.password_hash_max_wait)?;
    let demo = if config.dev {
        Some(crate::admin::seed_demo(&store, &hasher).await?)
    } else {
        None
    };
    let feed = RevocationFeed::new(store.clone(), config.lifetimes.access, config.watch);
    let accounts = AccountStates::new(store.clone(), config.account_cache);
    feed.start(accounts.clone()).await?;
    let issuer = AccessTokenIssuer::new(key, config.issuer.clone(), config.lifetimes.access);
    let exchange_policy = match &config.exchange_policy {
        Some(path) => {
            let source = PolicySource::load(path)?;
            info!(rows = source.current().len(), "exchange policy loaded");
            source.watch();
            source
        }
        None => PolicySource::fixed(ExchangePolicy::default()),
    };
    crate::telemetry::record(&crate::facts::Fact::ExchangePolicyRows(
        exchange_policy.current().len(),
    ));
    // Subject tokens of Exchange are meant for the callers, not tokend:
    // any audience, checked by the exchange itself.
    let subject_keys = KeySet::from_paserk(
        std::iter::once(issuer.active_key())
            .chain(verification_keys.iter())
            .map(|k| k.public_key.as_str()),
    )?;
    let introspection_verifier =
        super::introspection::verifier(config, subject_keys.clone(), &feed, stopping);
    let subject_verifier = Verifier::builder(subject_keys, &config.issuer, &config.issuer)
        .any_audience()
        .clock(config.clock.clone())
        .build();
    let authority = Arc::new(Authority::new(Parts {
        throttle: LoginThrottle::new(store.clone(), config.throttle),
        store,
        feed,
        accounts,
        issuer,
        hasher,
        default_audience: config.default_audience.clone(),
        lifetimes: config.lifetimes,
        verification_keys,
        max_sessions_per_user: config.max_sessions_per_user,
        revoke_all_interval: config.revoke_all_interval,
        subject_verifier,
        exchange_policy,
        introspection_verifier,
        cert_naming: config.cert_naming(),
    }));
    // What GetPublicKeys publishes, as the authority worked it out (the
    // active key first, the verification keys without repeats).
    if let Some(active) = authority.public_keys().first() {
        crate::telemetry::record(&crate::facts::Fact::Keys(crate::facts::Keys {
            signing_key_id: &active.key_id,
            published: authority.public_keys().len(),
        }));
    }
    Ok(Built {
        authority,
        demo,
        keys,
    })
}
