/*
 * tls.c - loading and checking the HTTPS certificate and key.
 */
#include "tls.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* Certificate and key files are small; anything larger is not one. */
#define TLS_FILE_MAX_BYTES (1024 * 1024)

/* Reads the whole file at path into *out (NUL-terminated, malloc'd). Returns 0 or an errno. */
static int read_file(const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t len = 0;
    int error = 0;

    *out = NULL;
    if (f == NULL)
        return errno;
    text = malloc(TLS_FILE_MAX_BYTES + 1);
    if (text == NULL) {
        error = ENOMEM;
        goto out_close;
    }
    len = fread(text, 1, TLS_FILE_MAX_BYTES + 1, f);
    if (ferror(f))
        error = EIO;
    else if (len > TLS_FILE_MAX_BYTES)
        error = EFBIG;
    if (error != 0) {
        free(text);
        goto out_close;
    }
    text[len] = '\0';
    *out = text;
out_close:
    fclose(f);
    return error;
}

/* The first OpenSSL error queued, as text, and clears the queue. */
static void ssl_reason(char *out, size_t size)
{
    unsigned long code = ERR_get_error();

    if (code == 0)
        snprintf(out, size, "no PEM data found");
    else
        ERR_error_string_n(code, out, size);
    ERR_clear_error();
}

/* Parses the PEM texts and checks that the key is the certificate's. */
static int check_pair(const struct tls_server_files *files, const char *cert_path,
                      const char *key_path, char *err, size_t errlen)
{
    BIO *cert_bio = BIO_new_mem_buf(files->cert_pem, -1);
    BIO *key_bio = BIO_new_mem_buf(files->key_pem, -1);
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    char why[160];
    int ret = CF_ERR_INVALID;

    ERR_clear_error();
    if (cert_bio == NULL || key_bio == NULL) {
        snprintf(err, errlen, "out of memory reading the tls files");
        goto out;
    }
    cert = PEM_read_bio_X509(cert_bio, NULL, NULL, NULL);
    if (cert == NULL) {
        ssl_reason(why, sizeof(why));
        snprintf(err, errlen, "--tls-cert %s holds no PEM certificate: %s", cert_path, why);
        goto out;
    }
    key = PEM_read_bio_PrivateKey(key_bio, NULL, NULL, NULL);
    if (key == NULL) {
        ssl_reason(why, sizeof(why));
        snprintf(err, errlen, "--tls-key %s holds no unencrypted PEM private key: %s", key_path,
                 why);
        goto out;
    }
    if (X509_check_private_key(cert, key) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "--tls-key %s is not the key of the certificate in --tls-cert %s",
                 key_path, cert_path);
        goto out;
    }
    ret = CF_OK;
out:
    EVP_PKEY_free(key);
    X509_free(cert);
    BIO_free(key_bio);
    BIO_free(cert_bio);
    return ret;
}

int tls_server_files_load(const char *cert_path, const char *key_path,
                          struct tls_server_files *files, char *err, size_t errlen)
{
    int error, ret;

    memset(files, 0, sizeof(*files));
    if (cert_path == NULL && key_path == NULL)
        return CF_OK;
    if (cert_path == NULL || key_path == NULL) {
        snprintf(err, errlen, "--tls-cert and --tls-key go together: %s is missing",
                 cert_path == NULL ? "--tls-cert" : "--tls-key");
        return CF_ERR_INVALID;
    }
    error = read_file(cert_path, &files->cert_pem);
    if (error != 0) {
        snprintf(err, errlen, "cannot read --tls-cert %s: %s", cert_path, strerror(error));
        return CF_ERR_INVALID;
    }
    error = read_file(key_path, &files->key_pem);
    if (error != 0) {
        snprintf(err, errlen, "cannot read --tls-key %s: %s", key_path, strerror(error));
        tls_server_files_release(files);
        return CF_ERR_INVALID;
    }
    ret = check_pair(files, cert_path, key_path, err, errlen);
    if (ret != CF_OK)
        tls_server_files_release(files);
    return ret;
}

void tls_server_files_release(struct tls_server_files *files)
{
    if (files->key_pem != NULL)
        OPENSSL_cleanse(files->key_pem, strlen(files->key_pem));
    free(files->key_pem);
    free(files->cert_pem);
    files->key_pem = NULL;
    files->cert_pem = NULL;
}
