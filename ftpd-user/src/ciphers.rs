//! `ssl_ciphers`: vsftpd's OpenSSL-style cipher list, read into the set of
//! suites rustls offers. Below the config (which validates the option with
//! it) and the TLS setup (which builds its provider from it).

use rustls::{SupportedCipherSuite, crypto::CryptoProvider};

/// OpenSSL spellings of the suites rustls offers, for `ssl_ciphers`.
const OPENSSL_NAMES: &[(&str, &str)] = &[
    ("TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"),
    ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"),
    ("TLS_CHACHA20_POLY1305_SHA256", "TLS13_CHACHA20_POLY1305_SHA256"),
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    ("ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    ("ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    ("ECDHE-RSA-CHACHA20-POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
];

/// OpenSSL cipher-string words that select "the good ones": rustls offers
/// only those, so they select every suite.
const KEYWORDS: &[&str] =
    &["DEFAULT", "HIGH", "ALL", "SECURE", "PROFILE=SYSTEM", "ECDHE", "EECDH", "AESGCM", "CHACHA20", "TLSv1.2"];

/// The ring provider restricted to what `ssl_ciphers` names. As in OpenSSL,
/// the list picks TLS 1.2 suites; TLS 1.3 suites are kept unless some are
/// named. Exclusions (`!NAME`) remove suites; unknown suite names are passed
/// over as long as something usable is selected; if nothing is, or an
/// exclusion names nothing ftpd knows, startup stops.
pub fn provider(spec: &str) -> Result<CryptoProvider, String> {
    let mut p = rustls::crypto::ring::default_provider();
    let all = p.cipher_suites.clone();
    let name = |s: &SupportedCipherSuite| format!("{:?}", s.suite());
    let mut picked: Vec<SupportedCipherSuite> = Vec::new();
    let mut every = false;
    let mut excluded: Vec<&str> = Vec::new();
    for word in spec.split([':', ',', ' ']).map(str::trim).filter(|w| !w.is_empty()) {
        if let Some(x) = word.strip_prefix(['!', '-']) {
            excluded.push(x);
            continue;
        }
        if word.starts_with(['+', '@']) {
            continue;
        }
        if KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word)) {
            every = true;
            continue;
        }
        let wanted = OPENSSL_NAMES.iter().find(|(o, _)| o.eq_ignore_ascii_case(word)).map_or(word, |(_, r)| r);
        if let Some(s) = all.iter().find(|s| name(s).eq_ignore_ascii_case(wanted))
            && !picked.iter().any(|p| p.suite() == s.suite())
        {
            picked.push(*s);
        }
    }
    if every || spec.trim().is_empty() {
        picked = all.clone();
    }
    // Exclusions apply to the TLS 1.2 suites, as OpenSSL's cipher list does.
    // Words naming what rustls never offers (aNULL, RC4, 3DES...) have
    // nothing to remove; a word that is neither is an error, not ignored.
    for x in &excluded {
        let matches = exclusion(x).ok_or_else(|| {
            format!("ssl_ciphers={spec:?}: cannot exclude {x:?}: not a cipher suite or family ftpd knows")
        })?;
        picked.retain(|s| matches!(s, SupportedCipherSuite::Tls13(_)) || !matches(&name(s)));
    }
    if every || spec.trim().is_empty() {
        if !picked.iter().any(|s| matches!(s, SupportedCipherSuite::Tls12(_))) && !excluded.is_empty() {
            return Err(format!("ssl_ciphers={spec:?}: the exclusions leave no TLS 1.2 cipher suite"));
        }
        p.cipher_suites = picked;
        return Ok(p);
    }
    if picked.is_empty() {
        let known: Vec<&str> = OPENSSL_NAMES.iter().map(|(o, _)| *o).collect();
        return Err(format!(
            "ssl_ciphers={spec:?}: no cipher suite that rustls implements is named (3DES, RC4, CBC and \
             non-ECDHE suites do not exist in rustls); use HIGH, or some of: {}",
            known.join(":")
        ));
    }
    if !picked.iter().any(|s| matches!(s, SupportedCipherSuite::Tls13(_))) {
        picked.extend(all.iter().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))).copied());
    }
    p.cipher_suites = picked;
    Ok(p)
}

/// Whether a rustls suite name is one an exclusion removes.
type SuiteMatch = Box<dyn Fn(&str) -> bool>;

/// What an `ssl_ciphers` exclusion (`!WORD`) removes, by rustls suite name;
/// `None` for a word ftpd does not know.
fn exclusion(word: &str) -> Option<SuiteMatch> {
    let w = word.to_ascii_uppercase();
    if let Some((_, r)) = OPENSSL_NAMES.iter().find(|(o, _)| o.eq_ignore_ascii_case(&w)) {
        let r = (*r).to_owned();
        return Some(Box::new(move |n: &str| n.eq_ignore_ascii_case(&r)));
    }
    let part: Option<&'static [&'static str]> = match w.as_str() {
        "CHACHA20" => Some(&["CHACHA20"]),
        "AESGCM" | "AES" => Some(&["AES_"]),
        "AES128" => Some(&["AES_128"]),
        "AES256" => Some(&["AES_256"]),
        "ECDSA" | "AECDSA" => Some(&["ECDSA"]),
        "RSA" | "ARSA" => Some(&["_RSA_"]),
        "SHA384" => Some(&["SHA384"]),
        "SHA256" => Some(&["SHA256"]),
        _ => None,
    };
    if let Some(parts) = part {
        return Some(Box::new(move |n: &str| parts.iter().any(|p| n.to_ascii_uppercase().contains(p))));
    }
    const ABSENT: &[&str] = &[
        "ANULL", "ENULL", "NULL", "EXPORT", "EXP", "RC4", "MD5", "3DES", "DES", "LOW", "MEDIUM", "PSK", "SRP", "DSS",
        "CAMELLIA", "SEED", "IDEA", "KRSA", "ADH", "AECDH", "SHA1", "SHA", "SSLV3", "CBC", "AESCCM", "ARIA",
    ];
    ABSENT.contains(&w.as_str()).then(|| Box::new(|_: &str| false) as SuiteMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_lists() {
        assert!(provider("HIGH").is_ok());
        assert!(provider("").is_ok());
        assert!(provider("DES-CBC3-SHA").unwrap_err().contains("ssl_ciphers"));
        let p = provider("ECDHE-RSA-AES128-GCM-SHA256:!aNULL").unwrap();
        let tls12: Vec<_> = p.cipher_suites.iter().filter(|s| matches!(s, SupportedCipherSuite::Tls12(_))).collect();
        assert_eq!(tls12.len(), 1);
        assert!(p.cipher_suites.iter().any(|s| matches!(s, SupportedCipherSuite::Tls13(_))));
    }

    #[test]
    fn cipher_exclusions_remove_what_they_name_and_unknown_words_are_refused() {
        let tls12 = |p: &CryptoProvider| -> Vec<String> {
            p.cipher_suites
                .iter()
                .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
                .map(|s| format!("{:?}", s.suite()))
                .collect()
        };
        let p = provider("HIGH:!ECDHE-RSA-AES128-GCM-SHA256:!CHACHA20").unwrap();
        let names = tls12(&p);
        assert!(!names.iter().any(|n| n.contains("CHACHA20")), "{names:?}");
        assert!(!names.iter().any(|n| n == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"), "{names:?}");
        assert!(names.iter().any(|n| n == "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"), "{names:?}");
        // TLS 1.3 suites are not shaped by the list, as in OpenSSL.
        assert!(p.cipher_suites.iter().any(|s| matches!(s, SupportedCipherSuite::Tls13(_))));
        // What rustls never offers has nothing to remove.
        assert_eq!(tls12(&provider("HIGH:!aNULL:!RC4:!3DES").unwrap()).len(), tls12(&provider("HIGH").unwrap()).len());
        assert!(provider("HIGH:!NOSUCHTHING").unwrap_err().contains("NOSUCHTHING"));
        assert!(provider("HIGH:!AES:!CHACHA20").unwrap_err().contains("no TLS 1.2"));
    }
}
