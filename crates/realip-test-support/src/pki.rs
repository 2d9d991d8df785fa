//! Certificates made at test time (rcgen): a CA and the client certificates it signs.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// A self-signed CA with the common name `cn`, allowed to sign certificates.
pub fn test_ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, cn);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA certificate")
}

/// A client certificate (`clientAuth`) with the common name `cn`, signed by `issuer`, and its
/// key.
pub fn client_certificate(
    cn: &str,
    issuer: &CertifiedIssuer<'_, KeyPair>,
) -> (Certificate, KeyPair) {
    let mut client = CertificateParams::default();
    client.distinguished_name.push(DnType::CommonName, cn);
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("client key");
    let cert = client.signed_by(&key, issuer).expect("client certificate");
    (cert, key)
}
