/*
 * tls.h - the certificate and key the API serves HTTPS with (--tls-cert,
 * --tls-key, DESIGN §7). The files are read once, at start, and checked
 * here so that a mistake is named clearly instead of failing inside the
 * HTTP server's TLS library.
 */
#ifndef CF_TLS_H
#define CF_TLS_H

#include <stddef.h>

/* The PEM texts of a server certificate chain and its private key. */
struct tls_server_files {
    char *cert_pem; /* NUL-terminated, owned */
    char *key_pem;  /* NUL-terminated, owned; cleared before it is freed */
};

/*
 * Reads cert_path and key_path into files. Both NULL: CF_OK with files
 * empty (plain HTTP). One without the other, a file that cannot be read, a
 * file without a PEM certificate or key, or a key that does not belong to
 * the certificate: CF_ERR_INVALID with the reason, naming the flag and the
 * file, in err (files is then empty).
 */
int tls_server_files_load(const char *cert_path, const char *key_path,
                          struct tls_server_files *files, char *err, size_t errlen);

/* Frees what files owns (the key cleared first); accepts an empty one. */
void tls_server_files_release(struct tls_server_files *files);

#endif
