"""TLS on every hop, mutual TLS between the services.

Each service takes a certificate, its key and the CA that signs the stack's certificates, from
`--tls-cert`, `--tls-key`, `--tls-ca` or SPECDEC_TLS_CERT, SPECDEC_TLS_KEY, SPECDEC_TLS_CA:
- draft and target serve TLS and, given the CA, accept only clients with a certificate it signed
  (mutual TLS: only the orchestrator gets in);
- the orchestrator serves its public APIs (gRPC and HTTP) with TLS, without asking clients for a
  certificate (they present a bearer token), and calls draft and target with its certificate as the
  client certificate, checking theirs against the CA;
- `specdec health` probes with the same files, as a container's probe runs with its environment.

`write_stack_certificates` makes a throwaway CA and certificates for a local stack (`specdec up
--tls`, tests), with the `cryptography` package.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

ENV = {"cert": "SPECDEC_TLS_CERT", "key": "SPECDEC_TLS_KEY", "ca": "SPECDEC_TLS_CA"}


@dataclass(frozen=True)
class TlsFiles:
    cert: Path | None  # this side's certificate: a server's always, a client's for mutual TLS
    key: Path | None
    ca: Path | None  # what the other side's certificate is checked against

    @classmethod
    def from_paths(cls, cert: str, key: str, ca: str, *, server: bool = True) -> TlsFiles | None:
        """None when nothing is given (plaintext); ValueError, saying what is missing, for half a
        configuration. A client may give only a CA (it then shows no certificate of its own)."""
        if not (cert or key or ca):
            return None
        if bool(cert) != bool(key) or (server and not cert):
            raise ValueError("TLS needs --tls-cert and --tls-key together" + (" (this server's own)" if server else ""))
        files = cls(Path(cert) if cert else None, Path(key) if key else None, Path(ca) if ca else None)
        for path in (files.cert, files.key, files.ca):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file not found: {path}")
        return files

    def server_credentials(self, require_client_certificates: bool) -> grpc.ServerCredentials:
        assert self.cert is not None and self.key is not None
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes() if self.ca else None,
            require_client_auth=require_client_certificates and self.ca is not None,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The server's certificate checked against the CA (the system's roots without one); ours
        shown when we have one."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes() if self.ca else None,
            private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None,
        )

    def own_name(self) -> str | None:
        """The first name our certificate is valid for: what a service probing itself on loopback
        checks the certificate it is shown against."""
        if self.cert is None:
            return None
        from cryptography import x509

        names = x509.load_pem_x509_certificate(self.cert.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
        return dns[0] if dns else None


def aio_channel(address: str, tls: TlsFiles | None, *, options: list | tuple = (), interceptors=None,
                server_name: str | None = None) -> grpc.aio.Channel:
    """A channel to `address`: plaintext without `tls`; with it, TLS, expecting a certificate for
    `server_name` when given (else for the address's host)."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)
    if server_name:
        options = [*options, ("grpc.ssl_target_name_override", server_name)]
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=list(options), interceptors=interceptors)


def add_arguments(parser, *, client: bool = False) -> None:
    """--tls-cert, --tls-key, --tls-ca, defaulting to the SPECDEC_TLS_* variables."""
    helps = ({"cert": "a client certificate to show (PEM), for servers that ask for one", "key": "its private key",
              "ca": "the CA the server's certificate is checked against"} if client else
             {"cert": "this service's certificate (PEM)", "key": "its private key (PEM)",
              "ca": "the CA that signs the stack's certificates: clients and upstreams are checked against it "
                    "(mutual TLS between the services)"})
    for name, help_text in helps.items():
        parser.add_argument(f"--tls-{name}", default=os.environ.get(ENV[name], ""),
                            help=f"{help_text} (default ${ENV[name]}; none = plaintext)")


def write_stack_certificates(directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> TlsFiles:
    """A throwaway CA and one certificate, valid for `hosts` as server and as client, in `directory`
    (ca.pem, cert.pem, key.pem). For a local stack: every service may use the same certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=7))

    def certificate(subject: str, key, issuer: str, issuer_key, extensions) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(validity[0]).not_valid_after(validity[1]))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("specdec local CA", ca_key, "specdec local CA", ca_key,
                     [(x509.BasicConstraints(ca=True, path_length=0), True)])
    names = [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts]
    leaf = certificate(hosts[0], key, "specdec local CA", ca_key, [
        (x509.SubjectAlternativeName(names), False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False),
    ])
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "cert.pem", directory / "key.pem", directory / "ca.pem")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    files.key.chmod(0o600)
    return files


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
