//! Certificates made in the tests: a CA, server certificates for the
//! loopback, client certificates for mTLS, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The certificate's DER, e.g. for its thumbprint.
    pub der: Vec<u8>,
}

impl CertFiles {
    /// The certificate path as text, for command lines.
    pub fn cert_arg(&self) -> &str {
        self.cert.to_str().expect("utf-8 path")
    }

    /// The key path as text.
    pub fn key_arg(&self) -> &str {
        self.key.to_str().expect("utf-8 path")
    }
}

/// A test certificate authority and the files it issues, in a directory of
/// its own.
pub struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca: PathBuf,
}

impl Pki {
    /// A new CA called `name`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).expect("write CA");
        Pki {
            issuer: Issuer::new(params, key),
            dir,
            ca,
        }
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// The CA certificate path as text.
    pub fn ca_arg(&self) -> &str {
        self.ca.to_str().expect("utf-8 path")
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, name: &str) -> CertFiles {
        self.issue(
            name,
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate naming `name` (subject alternative name and
    /// common name).
    pub fn client(&self, name: &str) -> CertFiles {
        self.issue(name, vec![name.into()], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate naming `name` in its common name only, as many
    /// internal PKIs still issue them.
    pub fn client_common_name_only(&self, name: &str) -> CertFiles {
        let stem = format!("{name}-cn-only");
        self.issue_as(&stem, name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate with exactly these subject alternative names:
    /// DNS names and URIs (SPIFFE IDs among them); common name `stem`.
    pub fn client_with_sans(&self, stem: &str, dns: &[&str], uris: &[&str]) -> CertFiles {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .expect("params");
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().expect("an IA5 URI")));
        }
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        self.write(stem, &cert, &key)
    }

    fn issue(&self, name: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> CertFiles {
        self.issue_as(name, name, names, usage)
    }

    /// Issues a certificate for the common name `name` and subject
    /// alternative `names`, written as `STEM.pem` and `STEM.key`.
    fn issue_as(
        &self,
        stem: &str,
        name: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> CertFiles {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        self.write(stem, &cert, &key)
    }

    /// Writes `cert` and `key` as `STEM.pem` and `STEM.key`.
    fn write(&self, stem: &str, cert: &rcgen::Certificate, key: &KeyPair) -> CertFiles {
        let files = CertFiles {
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}
