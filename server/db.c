/*
 * db.c - SQLite storage: migrations, metadata, catalog, fences, runs.
 */
#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "embedded.h"
#include "log.h"

/* How long a statement waits for another connection's write lock. */
#define DB_BUSY_TIMEOUT_MS 10000

/*
 * How many statements a handle keeps prepared. Preparing (parsing and
 * planning) took about a third of the CPU of a job creation, and the
 * scheduler upserts runs thousands of times a second; an instance runs a
 * few dozen distinct statements, so every one of them stays.
 */
#define DB_STMT_CACHE 64

/* A statement kept prepared, found again by its SQL text. */
struct db_cached_stmt {
    char *sql; /* owned copy */
    size_t len;
    sqlite3_stmt *stmt;
    bool in_use; /* handed out by prepare() and not yet given back by finish() */
};

struct db {
    sqlite3 *conn;
    pthread_mutex_t lock; /* held for every call, and from db_begin to its end */
    int lock_fd;          /* db_claim_owner's advisory lock, -1 when none */
    /* Statements kept prepared; used under lock, like the connection. */
    struct db_cached_stmt cache[DB_STMT_CACHE];
    size_t cached;
    struct db_observer observer;
};

void db_set_observer(struct db *db, const struct db_observer *observer)
{
    if (observer != NULL)
        db->observer = *observer;
    else
        memset(&db->observer, 0, sizeof(db->observer));
}

static void report_job(struct db *db, const char *name, const struct job *job, bool created)
{
    if (db->observer.job_changed != NULL)
        db->observer.job_changed(db->observer.ctx, name, job, created);
}

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt,
                                                          ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/*
 * Storage health, shared by every handle of the process (they share one
 * file on one disk): the wall ms since which writes fail for want of
 * storage (a full disk, an I/O error, a read-only file), 0 while they
 * succeed. Only db_probe_write() declares the storage healthy again: small
 * writes can succeed on a full disk (the WAL reuses its pages), so any
 * write that happens to go through must not restart the claims. The first failure is logged at
 * once, the rest at most once a minute with a count, so a full disk does not also flood the log.
 */
#define DB_STORAGE_LOG_EVERY_MS 60000
static atomic_llong storage_failed_since_ms;
static pthread_mutex_t storage_lock = PTHREAD_MUTEX_INITIALIZER;
static char storage_error[256];        /* under storage_lock */
static int64_t storage_logged_boot_ms; /* under storage_lock */
static int64_t storage_suppressed;     /* under storage_lock */

/* Whether a SQLite result code says the storage, not the statement, failed. */
static bool storage_failure(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
        return true;
    default:
        return false;
    }
}

static void note_storage_failure(const char *what, const char *message)
{
    char quoted[512];
    int64_t now_boot = cf_boot_ms(), expected = 0;
    bool began;

    pthread_mutex_lock(&storage_lock);
    began = atomic_compare_exchange_strong(&storage_failed_since_ms, &expected, cf_wall_ms());
    if (began)
        snprintf(storage_error, sizeof(storage_error), "%s", message);
    /* A failure soon after a recovery is counted, not logged: no flood when the disk flaps. */
    if (began && (storage_logged_boot_ms == 0 ||
                  now_boot - storage_logged_boot_ms >= DB_STORAGE_LOG_EVERY_MS)) {
        log_error("database not writable: claims stop until it is", "op=%s error=\"%s\"", what,
                  log_quote(message, quoted, sizeof(quoted)));
        storage_logged_boot_ms = now_boot;
        storage_suppressed = 0;
    } else if (now_boot - storage_logged_boot_ms >= DB_STORAGE_LOG_EVERY_MS) {
        log_error("database still not writable", "op=%s error=\"%s\" failures=%lld", what,
                  log_quote(message, quoted, sizeof(quoted)), (long long)storage_suppressed + 1);
        storage_logged_boot_ms = now_boot;
        storage_suppressed = 0;
    } else {
        storage_suppressed++;
    }
    pthread_mutex_unlock(&storage_lock);
}

/* A write succeeded: the storage works (again). */
static void note_storage_ok(void)
{
    int64_t since = atomic_load(&storage_failed_since_ms);

    if (since == 0 || !atomic_compare_exchange_strong(&storage_failed_since_ms, &since, 0))
        return;
    log_info("database writable again", "after_ms=%lld", (long long)(cf_wall_ms() - since));
}

bool db_storage_ok(char *why, size_t why_len)
{
    if (atomic_load(&storage_failed_since_ms) == 0)
        return true;
    if (why != NULL && why_len > 0) {
        pthread_mutex_lock(&storage_lock);
        snprintf(why, why_len, "database not writable: %s", storage_error);
        pthread_mutex_unlock(&storage_lock);
    }
    return false;
}

/* Logs and maps a SQLite failure; returns CF_ERR_DB. */
static int db_fail(struct db *db, const char *what)
{
    char quoted[512];

    if (storage_failure(sqlite3_extended_errcode(db->conn))) {
        note_storage_failure(what, sqlite3_errmsg(db->conn));
        return CF_ERR_DB;
    }
    log_error("database error", "op=%s error=\"%s\"", what,
              log_quote(sqlite3_errmsg(db->conn), quoted, sizeof(quoted)));
    return CF_ERR_DB;
}

/*
 * The database holds the signing secret and, tokenless, the admin token: its
 * file and the -wal and -shm beside it (which SQLite creates with the
 * database's mode) are for their owner only, also when made before with a
 * wider mode. Files that do not exist are skipped.
 */
static void owner_only(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    char name[PATH_MAX];
    struct stat st;

    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        if (snprintf(name, sizeof(name), "%s%s", path, suffixes[i]) >= (int)sizeof(name))
            continue;
        if (stat(name, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) != 0)
            chmod(name, st.st_mode & 0700);
    }
}

int db_open(const char *path, struct db **out, char *err, size_t errlen)
{
    struct db *db = calloc(1, sizeof(*db));
    int rc;

    *out = NULL;
    if (db == NULL)
        return CF_ERR_NOMEM;
    db->lock_fd = -1;
    pthread_mutex_init(&db->lock, NULL);
    rc = sqlite3_open_v2(path, &db->conn,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        set_err(err, errlen, "cannot open database: %s",
                db->conn ? sqlite3_errmsg(db->conn) : sqlite3_errstr(rc));
        goto out_close;
    }
    sqlite3_busy_timeout(db->conn, DB_BUSY_TIMEOUT_MS);
    owner_only(path);
    /*
     * WAL lets API reads run beside scheduler writes. synchronous=NORMAL in
     * WAL mode loses no committed transaction when the process is killed;
     * only an operating-system crash can lose the last ones.
     */
    rc = sqlite3_exec(db->conn,
                      "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                      "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;"
                      /* 1 MiB of page cache per handle, not 2: an instance keeps several. */
                      "PRAGMA cache_size=-1024;",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        set_err(err, errlen, "cannot set up database: %s", sqlite3_errmsg(db->conn));
        goto out_close;
    }
    *out = db;
    return CF_OK;

out_close:
    db_close(db);
    return CF_ERR_DB;
}

void db_close(struct db *db)
{
    if (db == NULL)
        return;
    for (size_t i = 0; i < db->cached; i++) {
        sqlite3_finalize(db->cache[i].stmt);
        free(db->cache[i].sql);
    }
    sqlite3_close_v2(db->conn);
    if (db->lock_fd >= 0)
        close(db->lock_fd);
    pthread_mutex_destroy(&db->lock);
    free(db);
}

/* ---- statements ---- */

/*
 * A statement for sql, ready to bind and step: the handle's kept one when
 * it is free, else a newly prepared one (kept while the cache has room).
 * NULL on error (logged). Give it back with finish().
 */
static sqlite3_stmt *prepare(struct db *db, const char *sql)
{
    size_t len = strlen(sql);
    sqlite3_stmt *stmt = NULL;
    bool keep;

    for (size_t i = 0; i < db->cached; i++) {
        struct db_cached_stmt *entry = &db->cache[i];

        if (!entry->in_use && entry->len == len && memcmp(entry->sql, sql, len) == 0) {
            entry->in_use = true;
            return entry->stmt;
        }
    }
    keep = db->cached < DB_STMT_CACHE;
    if (sqlite3_prepare_v3(db->conn, sql, (int)len + 1, keep ? SQLITE_PREPARE_PERSISTENT : 0, &stmt,
                           NULL) != SQLITE_OK) {
        db_fail(db, "prepare");
        return NULL;
    }
    if (keep) {
        struct db_cached_stmt *entry = &db->cache[db->cached];

        entry->sql = strdup(sql);
        if (entry->sql != NULL) {
            entry->len = len;
            entry->stmt = stmt;
            entry->in_use = true;
            db->cached++;
        }
    }
    return stmt;
}

/* Gives back a statement of prepare(): a kept one is reset for reuse, any other finalized. */
static void finish(struct db *db, sqlite3_stmt *stmt)
{
    if (stmt == NULL)
        return;
    for (size_t i = 0; i < db->cached; i++) {
        if (db->cache[i].stmt == stmt) {
            sqlite3_reset(stmt);
            sqlite3_clear_bindings(stmt);
            db->cache[i].in_use = false;
            return;
        }
    }
    sqlite3_finalize(stmt);
}

static void bind_text(sqlite3_stmt *stmt, int index, const char *text)
{
    if (text == NULL)
        sqlite3_bind_null(stmt, index);
    else
        sqlite3_bind_text(stmt, index, text, -1, SQLITE_TRANSIENT);
}

/* Binds value, or NULL when value is 0 (times and statuses that are unset). */
static void bind_int_or_null(sqlite3_stmt *stmt, int index, int64_t value)
{
    if (value == 0)
        sqlite3_bind_null(stmt, index);
    else
        sqlite3_bind_int64(stmt, index, value);
}

/* Runs a statement that returns no rows and finalizes it. */
static int step_done(struct db *db, sqlite3_stmt *stmt, const char *what)
{
    int rc;

    if (stmt == NULL)
        return CF_ERR_DB;
    rc = sqlite3_step(stmt);
    finish(db, stmt);
    if (rc != SQLITE_DONE)
        return db_fail(db, what);
    return CF_OK;
}

static char *column_strdup(sqlite3_stmt *stmt, int index)
{
    const unsigned char *text = sqlite3_column_text(stmt, index);

    return text != NULL ? strdup((const char *)text) : NULL;
}

/* ---- migrations ---- */

static int migration_number(const char *name)
{
    return atoi(name);
}

int db_schema_version(void)
{
    int newest = 0;

    for (const struct embedded_file *m = embedded_migrations; m->name != NULL; m++)
        newest = migration_number(m->name);
    return newest;
}

int db_migrate(struct db *db, char *err, size_t errlen)
{
    sqlite3_stmt *stmt = NULL;
    int applied = 0, ret = CF_ERR_DB;
    char *msg = NULL;

    pthread_mutex_lock(&db->lock);
    if (sqlite3_exec(
            db->conn,
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
            NULL, NULL, &msg) != SQLITE_OK) {
        set_err(err, errlen, "cannot create schema_migrations: %s", msg);
        goto out;
    }
    stmt = prepare(db, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (stmt == NULL || sqlite3_step(stmt) != SQLITE_ROW) {
        set_err(err, errlen, "cannot read schema version: %s", sqlite3_errmsg(db->conn));
        goto out;
    }
    applied = sqlite3_column_int(stmt, 0);
    /* A statement left running would keep a migration from dropping a table. */
    finish(db, stmt);
    stmt = NULL;
    if (applied > db_schema_version()) {
        char detail[128];

        snprintf(detail, sizeof(detail), "%d, this binary knows up to %d", applied,
                 db_schema_version());
        set_err(err, errlen,
                "database schema is newer than this binary (schema version %s); "
                "upgrade cronfence or use another --db",
                detail);
        goto out;
    }
    for (const struct embedded_file *m = embedded_migrations; m->name != NULL; m++) {
        int number = migration_number(m->name);
        sqlite3_stmt *record;

        if (number <= applied)
            continue;
        sqlite3_free(msg);
        msg = NULL;
        if (sqlite3_exec(db->conn, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
            sqlite3_exec(db->conn, (const char *)m->data, NULL, NULL, &msg) != SQLITE_OK) {
            char detail[512];

            snprintf(detail, sizeof(detail), "%s: %s", m->name, msg ? msg : "?");
            sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
            set_err(err, errlen, "migration failed: %s", detail);
            goto out;
        }
        record = prepare(db, "INSERT INTO schema_migrations (version, name, applied_at) "
                             "VALUES (?, ?, ?)");
        if (record != NULL) {
            sqlite3_bind_int(record, 1, number);
            bind_text(record, 2, m->name);
            sqlite3_bind_int64(record, 3, cf_wall_ms());
        }
        if (step_done(db, record, "record migration") != CF_OK ||
            sqlite3_exec(db->conn, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
            sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
            set_err(err, errlen, "migration failed: %s", m->name);
            goto out;
        }
        log_info("migration applied", "name=%s", m->name);
    }
    ret = CF_OK;
out:
    sqlite3_free(msg);
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

/* ---- owner ---- */

int db_claim_owner(struct db *db, const char *path, char *err, size_t errlen)
{
    sqlite3_stmt *stmt;
    int fd;

    /*
     * flock() locks are independent of the POSIX record locks SQLite uses on
     * the same file, and this descriptor is only closed at exit, so SQLite's
     * own locking is unaffected. The lock dies with the process, kill -9
     * included, so a crashed instance never blocks its successor.
     */
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "cannot open database file: %s", strerror(errno));
        return CF_ERR_IO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char detail[400] = "another process";

        close(fd);
        pthread_mutex_lock(&db->lock);
        /* Absent on a database the other process is still creating: keep the generic text. */
        stmt = NULL;
        if (sqlite3_prepare_v2(db->conn, "SELECT pid, host FROM owner WHERE id = 1", -1, &stmt,
                               NULL) == SQLITE_OK &&
            sqlite3_step(stmt) == SQLITE_ROW)
            snprintf(detail, sizeof(detail), "pid %lld on %s",
                     (long long)sqlite3_column_int64(stmt, 0), sqlite3_column_text(stmt, 1));
        finish(db, stmt);
        pthread_mutex_unlock(&db->lock);
        set_err(err, errlen,
                "database is in use by another standalone instance (%s); "
                "give each instance its own --db",
                detail);
        return CF_ERR_CONFLICT;
    }
    db->lock_fd = fd;
    return CF_OK;
}

int db_record_owner(struct db *db)
{
    char host[256] = "";
    sqlite3_stmt *stmt;
    int ret;

    gethostname(host, sizeof(host) - 1);
    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "INSERT INTO owner (id, pid, host, started_at) VALUES (1, ?, ?, ?) "
                       "ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, host = excluded.host, "
                       "started_at = excluded.started_at");
    if (stmt != NULL) {
        sqlite3_bind_int64(stmt, 1, getpid());
        bind_text(stmt, 2, host);
        sqlite3_bind_int64(stmt, 3, cf_wall_ms());
    }
    ret = step_done(db, stmt, "owner");
    pthread_mutex_unlock(&db->lock);
    return ret;
}

/* ---- meta ---- */

static int meta_get_locked(struct db *db, const char *key, char **value)
{
    sqlite3_stmt *stmt = prepare(db, "SELECT value FROM meta WHERE key = ?");
    int rc, ret = CF_ERR_NOT_FOUND;

    *value = NULL;
    if (stmt == NULL)
        return CF_ERR_DB;
    bind_text(stmt, 1, key);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *value = column_strdup(stmt, 0);
        ret = *value != NULL ? CF_OK : CF_ERR_NOMEM;
    } else if (rc != SQLITE_DONE) {
        ret = db_fail(db, "meta get");
    }
    finish(db, stmt);
    return ret;
}

static int meta_set_locked(struct db *db, const char *key, const char *value)
{
    sqlite3_stmt *stmt = prepare(db, "INSERT INTO meta (key, value) VALUES (?, ?) "
                                     "ON CONFLICT (key) DO UPDATE SET value = excluded.value");

    if (stmt != NULL) {
        bind_text(stmt, 1, key);
        bind_text(stmt, 2, value);
    }
    return step_done(db, stmt, "meta set");
}

int db_meta_get(struct db *db, const char *key, char **value)
{
    int ret;

    pthread_mutex_lock(&db->lock);
    ret = meta_get_locked(db, key, value);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_meta_set(struct db *db, const char *key, const char *value)
{
    int ret;

    pthread_mutex_lock(&db->lock);
    ret = meta_set_locked(db, key, value);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_probe_write(struct db *db)
{
    int ret = CF_OK;

    /*
     * A tiny write can succeed on a full disk (the WAL reuses its pages), so
     * the probe commits a quarter megabyte, then takes it back.
     */
    pthread_mutex_lock(&db->lock);
    if (sqlite3_exec(db->conn,
                     "INSERT OR REPLACE INTO meta (key, value)"
                     " VALUES ('storage_probe', printf('%.*c', 262144, 'x'))",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db->conn, "DELETE FROM meta WHERE key = 'storage_probe'", NULL, NULL, NULL) !=
            SQLITE_OK)
        ret = db_fail(db, "storage probe");
    else
        note_storage_ok();
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_meta_get_or_create(struct db *db, const char *key, size_t nbytes, char **value)
{
    char *fresh = NULL;
    int ret;

    pthread_mutex_lock(&db->lock);
    ret = meta_get_locked(db, key, value);
    if (ret != CF_ERR_NOT_FOUND)
        goto out;
    fresh = malloc(2 * nbytes + 1);
    if (fresh == NULL) {
        ret = CF_ERR_NOMEM;
        goto out;
    }
    ret = cf_random_hex(fresh, nbytes);
    if (ret == CF_OK)
        ret = meta_set_locked(db, key, fresh);
    if (ret == CF_OK) {
        *value = fresh;
        fresh = NULL;
    }
out:
    free(fresh);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

/* ---- catalog ---- */

/* Builds a job from a row (doc, version, created_at, updated_at) starting at column col. */
static int job_from_row(sqlite3_stmt *stmt, int col, struct job **job)
{
    json_error_t jerr;
    const char *text = (const char *)sqlite3_column_text(stmt, col);
    json_t *doc = text ? json_loads(text, 0, &jerr) : NULL;
    json_t *errors = json_array();
    int ret = CF_ERR_DB;

    *job = NULL;
    if (doc == NULL || errors == NULL)
        goto out;
    /* Stored jobs were validated when written; the allow list is not re-applied. */
    ret = job_from_json(doc, NULL, true, job, errors);
    if (ret != CF_OK) {
        /* The document holds the webhook's URL, headers and secret: name what is wrong only. */
        json_t *first = json_array_get(errors, 0);
        char name[80], field[80], message[256];

        log_error(
            "stored job unreadable", "job=\"%s\" field=\"%s\" error=\"%s\"",
            log_quote(json_string_value(json_object_get(doc, "name")), name, sizeof(name)),
            log_quote(json_string_value(json_object_get(first, "field")), field, sizeof(field)),
            log_quote(json_string_value(json_object_get(first, "message")), message,
                      sizeof(message)));
        ret = CF_ERR_DB;
        goto out;
    }
    (*job)->version = sqlite3_column_int64(stmt, col + 1);
    (*job)->created_at_ms = sqlite3_column_int64(stmt, col + 2);
    (*job)->updated_at_ms = sqlite3_column_int64(stmt, col + 3);
out:
    json_decref(doc);
    json_decref(errors);
    return ret;
}

int db_job_get(struct db *db, const char *name, struct job **job)
{
    sqlite3_stmt *stmt;
    int rc, ret = CF_ERR_NOT_FOUND;

    *job = NULL;
    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "SELECT doc, version, created_at, updated_at FROM jobs "
                       "WHERE name = ? AND deleted_at IS NULL");
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out;
    }
    bind_text(stmt, 1, name);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        ret = job_from_row(stmt, 0, job);
    else if (rc != SQLITE_DONE)
        ret = db_fail(db, "job get");
out:
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

/* Appends job to a growing array; CF_ERR_NOMEM on failure (job then freed). */
static int push_job(struct job ***jobs, size_t *count, size_t *cap, struct job *job)
{
    if (*count == *cap) {
        size_t grown = *cap ? *cap * 2 : 16;
        struct job **bigger = realloc(*jobs, grown * sizeof(**jobs));

        if (bigger == NULL) {
            job_free(job);
            return CF_ERR_NOMEM;
        }
        *jobs = bigger;
        *cap = grown;
    }
    (*jobs)[(*count)++] = job;
    return CF_OK;
}

static void free_jobs(struct job **jobs, size_t count)
{
    for (size_t i = 0; i < count; i++)
        job_free(jobs[i]);
    free(jobs);
}

/* Collects the rows of a (doc, version, created_at, updated_at) query; at most limit (0: all). */
static int collect_jobs(struct db *db, sqlite3_stmt *stmt, int limit, struct job ***jobs,
                        size_t *count, bool *more)
{
    size_t cap = 0;
    int rc, ret = CF_OK;

    *jobs = NULL;
    *count = 0;
    if (more != NULL)
        *more = false;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct job *job;

        if (limit > 0 && *count == (size_t)limit) {
            if (more != NULL)
                *more = true;
            break;
        }
        ret = job_from_row(stmt, 0, &job);
        if (ret == CF_OK)
            ret = push_job(jobs, count, &cap, job);
        if (ret != CF_OK)
            break;
    }
    if (ret == CF_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        ret = db_fail(db, "job list");
    if (ret != CF_OK) {
        free_jobs(*jobs, *count);
        *jobs = NULL;
        *count = 0;
    }
    return ret;
}

/*
 * Job search (GET /jobs?q=): a case-insensitive substring of the name or
 * the description, with ASCII case folding as SQLite's lower() does it.
 *
 * A query of SEARCH_TRIGRAM_MIN_CHARS characters or more is looked up in
 * the trigram index job_search (migration 0003), which folds case over all
 * of Unicode and so returns a superset of the jobs that match; the exact
 * test is applied to those. When the index holds SEARCH_INDEX_MAX_MATCHES
 * matches or more, the query is common enough that walking the live jobs
 * in name order finds a page of matches sooner than sorting all of them,
 * so it takes the scan, as do shorter queries (which the index cannot
 * serve). The scan reads the index jobs_live_by_name, not the documents,
 * and stops after a page.
 */
#define SEARCH_TRIGRAM_MIN_CHARS 3
#define SEARCH_INDEX_MAX_MATCHES 4000

/* The exact test and the filters every listing applies (?1 after, ?2 q, ?3 paused). */
#define JOB_LIST_FILTER                                                                            \
    "j.deleted_at IS NULL AND j.name > ?1"                                                         \
    " AND (?2 IS NULL OR instr(j.name, lower(?2)) > 0"                                             \
    "      OR instr(lower(j.description), lower(?2)) > 0)"                                         \
    " AND (?3 < 0 OR j.paused = ?3)"

/* Number of characters (not bytes) of UTF-8 text. */
static size_t utf8_chars(const char *text)
{
    size_t chars = 0;

    for (; *text != '\0'; text++)
        if (((unsigned char)*text & 0xc0) != 0x80)
            chars++;
    return chars;
}

/*
 * q as an FTS5 phrase, a new string (free()): in double quotes, with its
 * own double quotes doubled, so that no character of q is query syntax.
 * NULL when out of memory.
 */
static char *search_phrase(const char *q)
{
    size_t len = 2, at = 0;
    char *phrase;

    for (const char *c = q; *c != '\0'; c++)
        len += *c == '"' ? 2 : 1;
    phrase = malloc(len + 1);
    if (phrase == NULL)
        return NULL;
    phrase[at++] = '"';
    for (const char *c = q; *c != '\0'; c++) {
        phrase[at++] = *c;
        if (*c == '"')
            phrase[at++] = '"';
    }
    phrase[at++] = '"';
    phrase[at] = '\0';
    return phrase;
}

/* Whether the search index holds fewer than SEARCH_INDEX_MAX_MATCHES jobs matching phrase. */
static int search_is_selective(struct db *db, const char *phrase, bool *selective)
{
    sqlite3_stmt *stmt = prepare(db, "SELECT count(*) FROM (SELECT 1 FROM job_search"
                                     " WHERE job_search MATCH ?1 LIMIT ?2)");
    int ret = CF_OK;

    *selective = false;
    if (stmt == NULL)
        return CF_ERR_DB;
    bind_text(stmt, 1, phrase);
    sqlite3_bind_int(stmt, 2, SEARCH_INDEX_MAX_MATCHES);
    if (sqlite3_step(stmt) == SQLITE_ROW)
        *selective = sqlite3_column_int(stmt, 0) < SEARCH_INDEX_MAX_MATCHES;
    else
        ret = db_fail(db, "job search count");
    finish(db, stmt);
    return ret;
}

int db_job_list(struct db *db, const struct db_job_query *query, struct job ***jobs, size_t *count,
                bool *more)
{
    sqlite3_stmt *stmt = NULL;
    char *phrase = NULL;
    bool indexed = false;
    int ret;

    *jobs = NULL;
    *count = 0;
    if (more != NULL)
        *more = false;
    if (query->q != NULL && utf8_chars(query->q) >= SEARCH_TRIGRAM_MIN_CHARS) {
        phrase = search_phrase(query->q);
        if (phrase == NULL)
            return CF_ERR_NOMEM;
    }
    pthread_mutex_lock(&db->lock);
    if (phrase != NULL) {
        ret = search_is_selective(db, phrase, &indexed);
        if (ret != CF_OK)
            goto out;
    }
    /* The cross join makes the index the outer loop: only its matches are read and sorted. */
    stmt =
        prepare(db, indexed ? "SELECT j.doc, j.version, j.created_at, j.updated_at"
                              " FROM job_search AS s CROSS JOIN jobs AS j ON j.id = s.rowid"
                              " WHERE s.job_search MATCH ?5 AND " JOB_LIST_FILTER
                              " ORDER BY j.name LIMIT ?4"
                            : "SELECT j.doc, j.version, j.created_at, j.updated_at"
                              " FROM jobs AS j WHERE " JOB_LIST_FILTER " ORDER BY j.name LIMIT ?4");
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out;
    }
    bind_text(stmt, 1, query->after ? query->after : "");
    bind_text(stmt, 2, query->q);
    sqlite3_bind_int(stmt, 3, query->paused);
    sqlite3_bind_int(stmt, 4, query->limit + 1);
    if (indexed)
        bind_text(stmt, 5, phrase);
    ret = collect_jobs(db, stmt, query->limit, jobs, count, more);
out:
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    free(phrase);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Sorted job lists (migration 0006)                                         */
/* ---------------------------------------------------------------------- */

/* The filters of a sorted listing (?2 q, ?3 paused), without the name cursor. */
#define JOB_SORTED_FILTER                                                                          \
    "j.deleted_at IS NULL"                                                                         \
    " AND (?2 IS NULL OR instr(j.name, lower(?2)) > 0"                                             \
    "      OR instr(lower(j.description), lower(?2)) > 0)"                                         \
    " AND (?3 < 0 OR j.paused = ?3)"

/* One statement per (key, direction): job_stats walked by its index, jobs joined by name. */
#define JOB_SORTED_SQL(key, cmp, dir)                                                              \
    "SELECT j.doc, j.version, j.created_at, j.updated_at, s." key                                  \
    " FROM job_stats AS s CROSS JOIN jobs AS j ON j.name = s.job WHERE " JOB_SORTED_FILTER         \
    " AND (s." key ", s.job) " cmp " (?5, ?1) ORDER BY s." key " " dir ", s.job " dir " LIMIT ?4"

int db_job_list_sorted(struct db *db, const struct db_job_query *query, enum db_job_sort sort,
                       bool descending, int64_t after_key, struct job ***jobs, size_t *count,
                       bool *more, int64_t *last_key)
{
    static const char *const sql[3][2] = {
        [DB_JOB_SORT_NEXT] = {JOB_SORTED_SQL("next_fire_at", ">", "ASC"),
                              JOB_SORTED_SQL("next_fire_at", "<", "DESC")},
        [DB_JOB_SORT_LAST_RUN] = {JOB_SORTED_SQL("last_run_at", ">", "ASC"),
                                  JOB_SORTED_SQL("last_run_at", "<", "DESC")},
        [DB_JOB_SORT_FAILURES] = {JOB_SORTED_SQL("consecutive_failures", ">", "ASC"),
                                  JOB_SORTED_SQL("consecutive_failures", "<", "DESC")},
    };
    sqlite3_stmt *stmt;
    size_t cap = 0;
    int rc, ret = CF_OK;

    *jobs = NULL;
    *count = 0;
    *more = false;
    *last_key = 0;
    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, sql[sort][descending]);
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out;
    }
    if (query->after != NULL) {
        bind_text(stmt, 1, query->after);
        sqlite3_bind_int64(stmt, 5, after_key);
    } else {
        /* Before every row: the lowest key and name ascending, above the highest descending. */
        bind_text(stmt, 1, descending ? "\x7f" : "");
        sqlite3_bind_int64(stmt, 5, descending ? INT64_MAX : INT64_MIN);
    }
    bind_text(stmt, 2, query->q);
    sqlite3_bind_int(stmt, 3, query->paused);
    sqlite3_bind_int(stmt, 4, query->limit + 1);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct job *job;

        if (*count == (size_t)query->limit) {
            *more = true;
            break;
        }
        ret = job_from_row(stmt, 0, &job);
        if (ret == CF_OK)
            ret = push_job(jobs, count, &cap, job);
        if (ret != CF_OK)
            break;
        *last_key = sqlite3_column_int64(stmt, 4);
    }
    if (ret == CF_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        ret = db_fail(db, "sorted job list");
    if (ret != CF_OK) {
        free_jobs(*jobs, *count);
        *jobs = NULL;
        *count = 0;
    }
out:
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_job_next_stale(struct db *db, int64_t now_ms, int limit, struct job ***jobs, size_t *count)
{
    sqlite3_stmt *stmt;
    int ret;

    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "SELECT j.doc, j.version, j.created_at, j.updated_at"
                       " FROM job_stats AS s CROSS JOIN jobs AS j ON j.name = s.job"
                       " WHERE s.next_fire_at < ?1 AND j.deleted_at IS NULL"
                       " ORDER BY s.next_fire_at LIMIT ?2");
    if (stmt != NULL) {
        sqlite3_bind_int64(stmt, 1, now_ms);
        sqlite3_bind_int(stmt, 2, limit);
    }
    ret = stmt ? collect_jobs(db, stmt, 0, jobs, count, NULL) : CF_ERR_DB;
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_job_next_store(struct db *db, const char *const *names, const int64_t *next_ms, size_t n)
{
    sqlite3_stmt *stmt = NULL;
    int ret = CF_OK;

    pthread_mutex_lock(&db->lock);
    if (sqlite3_exec(db->conn, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        ret = db_fail(db, "job next store");
        goto out_unlock;
    }
    stmt = prepare(db, "UPDATE job_stats SET next_fire_at = ?2 WHERE job = ?1");
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out_end;
    }
    for (size_t i = 0; i < n && ret == CF_OK; i++) {
        bind_text(stmt, 1, names[i]);
        sqlite3_bind_int64(stmt, 2, next_ms[i]);
        if (sqlite3_step(stmt) != SQLITE_DONE)
            ret = db_fail(db, "job next store");
        sqlite3_reset(stmt);
    }
out_end:
    finish(db, stmt);
    sqlite3_exec(db->conn, ret == CF_OK ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
out_unlock:
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_job_stats_get(struct db *db, const char *job, struct db_job_stats *stats)
{
    sqlite3_stmt *stmt;
    int rc, ret = CF_OK;

    memset(stats, 0, sizeof(*stats));
    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "SELECT consecutive_failures, last_error FROM job_stats WHERE job = ?1");
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out;
    }
    bind_text(stmt, 1, job);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const unsigned char *error = sqlite3_column_text(stmt, 1);

        stats->consecutive_failures = sqlite3_column_int64(stmt, 0);
        if (error != NULL) {
            stats->last_error = strdup((const char *)error);
            if (stats->last_error == NULL)
                ret = CF_ERR_NOMEM;
        }
    } else if (rc != SQLITE_DONE) {
        ret = db_fail(db, "job stats");
    }
out:
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_run_firings_by_instance(struct db *db, int64_t since_ms, json_t **counts)
{
    sqlite3_stmt *stmt;
    int rc, ret = CF_OK;

    *counts = json_object();
    if (*counts == NULL)
        return CF_ERR_NOMEM;
    pthread_mutex_lock(&db->lock);
    /* runs_by_time bounds the read to the window. */
    stmt = prepare(db, "SELECT instance, count(*) FROM runs WHERE sort_at >= ?1"
                       " AND instance IS NOT NULL"
                       " AND status IN ('running', 'succeeded', 'failed', 'fenced', 'lost')"
                       " GROUP BY instance");
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out;
    }
    sqlite3_bind_int64(stmt, 1, since_ms);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        json_object_set_new(*counts, (const char *)sqlite3_column_text(stmt, 0),
                            json_integer(sqlite3_column_int64(stmt, 1)));
    if (rc != SQLITE_DONE)
        ret = db_fail(db, "run firings");
out:
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    if (ret != CF_OK) {
        json_decref(*counts);
        *counts = NULL;
    }
    return ret;
}

int db_job_all(struct db *db, struct job ***jobs, size_t *count)
{
    sqlite3_stmt *stmt;
    int ret;

    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "SELECT doc, version, created_at, updated_at FROM jobs "
                       "WHERE deleted_at IS NULL ORDER BY name");
    ret = stmt ? collect_jobs(db, stmt, 0, jobs, count, NULL) : CF_ERR_DB;
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

/*
 * Runs sql, a query of one integer column with the job name as its one
 * parameter, for each of n jobs in one read transaction (a consistent view,
 * one statement), into out[i]; 0 where it finds no row. what names the
 * read in errors.
 */
static int read_int_per_job(struct db *db, const char *sql, const char *what,
                            const char *const *jobs, size_t n, int64_t *out)
{
    sqlite3_stmt *stmt = NULL;
    int rc, ret = CF_OK;

    for (size_t i = 0; i < n; i++)
        out[i] = 0;
    pthread_mutex_lock(&db->lock);
    if (sqlite3_exec(db->conn, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        ret = db_fail(db, what);
        goto out_unlock;
    }
    stmt = prepare(db, sql);
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out_end;
    }
    for (size_t i = 0; i < n && ret == CF_OK; i++) {
        bind_text(stmt, 1, jobs[i]);
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW)
            out[i] = sqlite3_column_int64(stmt, 0);
        else if (rc != SQLITE_DONE)
            ret = db_fail(db, what);
        sqlite3_reset(stmt);
    }
out_end:
    finish(db, stmt);
    sqlite3_exec(db->conn, "COMMIT", NULL, NULL, NULL);
out_unlock:
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_run_last_slots(struct db *db, const char *const *jobs, size_t n, int64_t *slot_ms)
{
    /*
     * A scheduled or catch-up run's sort_at is its slot (see
     * db_run_sort_at()), so the newest such run by runs_by_job holds the
     * latest slot: a job's long history is not read to find it.
     */
    return read_int_per_job(db,
                            "SELECT scheduled_at FROM runs WHERE job = ?1"
                            " AND trigger NOT IN ('manual', 'retry')"
                            " AND scheduled_at IS NOT NULL ORDER BY sort_at DESC, id DESC LIMIT 1",
                            "run last slots", jobs, n, slot_ms);
}

int db_job_count(struct db *db, int64_t *count)
{
    sqlite3_stmt *stmt;
    int ret = CF_ERR_DB;

    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "SELECT count(*) FROM jobs WHERE deleted_at IS NULL");
    if (stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW) {
        *count = sqlite3_column_int64(stmt, 0);
        ret = CF_OK;
    }
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

static int job_version_locked(struct db *db, const char *name, int64_t *version, bool *deleted)
{
    sqlite3_stmt *stmt = prepare(db, "SELECT version, deleted_at IS NOT NULL FROM jobs "
                                     "WHERE name = ?");
    int rc, ret = CF_OK;

    *version = 0;
    if (deleted != NULL)
        *deleted = false;
    if (stmt == NULL)
        return CF_ERR_DB;
    bind_text(stmt, 1, name);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int64(stmt, 0);
        if (deleted != NULL)
            *deleted = sqlite3_column_int(stmt, 1) != 0;
    } else if (rc != SQLITE_DONE) {
        ret = db_fail(db, "job version");
    }
    finish(db, stmt);
    return ret;
}

int db_job_version(struct db *db, const char *name, int64_t *version, bool *deleted)
{
    int ret;

    pthread_mutex_lock(&db->lock);
    ret = job_version_locked(db, name, version, deleted);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

/*
 * Stores a job or tombstone; the caller holds the lock and, for atomicity,
 * a transaction. *written says whether the version was new, *created
 * whether no live job had the name before.
 */
static int job_store_locked(struct db *db, const char *name, const struct job *job, int64_t version,
                            int64_t deleted_at_ms, bool *written, bool *created)
{
    sqlite3_stmt *stmt;
    char *doc = NULL;
    int64_t current;
    bool deleted;
    int ret;

    *written = false;
    ret = job_version_locked(db, name, &current, &deleted);
    if (ret != CF_OK || current >= version)
        return ret;
    *created = current == 0 || deleted;
    if (job != NULL) {
        json_t *json = job_to_json(job, true);

        doc = json ? json_dumps(json, JSON_COMPACT) : NULL;
        json_decref(json);
        if (doc == NULL)
            return CF_ERR_NOMEM;
    }
    stmt = prepare(db, "INSERT INTO jobs (name, version, doc, paused, created_at, updated_at,"
                       " deleted_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                       "ON CONFLICT (name) DO UPDATE SET version = excluded.version,"
                       " doc = excluded.doc, paused = excluded.paused,"
                       " created_at = excluded.created_at, updated_at = excluded.updated_at,"
                       " deleted_at = excluded.deleted_at");
    if (stmt != NULL) {
        bind_text(stmt, 1, name);
        sqlite3_bind_int64(stmt, 2, version);
        bind_text(stmt, 3, doc);
        sqlite3_bind_int(stmt, 4, job != NULL && job->paused);
        sqlite3_bind_int64(stmt, 5, job != NULL ? job->created_at_ms : deleted_at_ms);
        sqlite3_bind_int64(stmt, 6, job != NULL ? job->updated_at_ms : deleted_at_ms);
        bind_int_or_null(stmt, 7, job != NULL ? 0 : deleted_at_ms);
    }
    free(doc);
    ret = step_done(db, stmt, "job store");
    *written = ret == CF_OK;
    return ret;
}

int db_job_store(struct db *db, const char *name, const struct job *job, int64_t version,
                 int64_t deleted_at_ms)
{
    bool written, created = false;
    int ret;

    pthread_mutex_lock(&db->lock);
    ret = job_store_locked(db, name, job, version, deleted_at_ms, &written, &created);
    pthread_mutex_unlock(&db->lock);
    if (written)
        report_job(db, name, job, created);
    return ret;
}

int db_job_store_many(struct db *db, const struct db_job_change *changes, size_t count)
{
    bool *written, *created;
    int ret;

    if (count == 0)
        return CF_OK;
    written = calloc(count, sizeof(*written));
    created = calloc(count, sizeof(*created));
    if (written == NULL || created == NULL) {
        ret = CF_ERR_NOMEM;
        goto out;
    }
    ret = db_begin(db);
    if (ret != CF_OK)
        goto out;
    for (size_t i = 0; i < count && ret == CF_OK; i++)
        ret = job_store_locked(db, changes[i].name, changes[i].job, changes[i].version,
                               changes[i].deleted_at_ms, &written[i], &created[i]);
    if (ret == CF_OK) {
        ret = db_commit(db);
    } else {
        db_rollback(db);
    }
    if (ret == CF_OK)
        for (size_t i = 0; i < count; i++)
            if (written[i])
                report_job(db, changes[i].name, changes[i].job, created[i]);
out:
    free(written);
    free(created);
    return ret;
}

/* ---- transactions ---- */

int db_begin(struct db *db)
{
    pthread_mutex_lock(&db->lock);
    if (sqlite3_exec(db->conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        int ret = db_fail(db, "begin");

        pthread_mutex_unlock(&db->lock);
        return ret;
    }
    return CF_OK;
}

int db_commit(struct db *db)
{
    int ret = CF_OK;

    if (sqlite3_exec(db->conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        ret = db_fail(db, "commit");
        sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&db->lock);
    return ret;
}

void db_rollback(struct db *db)
{
    sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&db->lock);
}

int db_job_write_next(struct db *db, const char *name, struct job *job, int64_t deleted_at_ms,
                      int64_t *version)
{
    char *text = NULL, buf[32];
    bool written = false, created = false;
    int ret = db_begin(db);

    if (ret != CF_OK)
        return ret;
    ret = meta_get_locked(db, "catalog_version", &text);
    if (ret != CF_OK && ret != CF_ERR_NOT_FOUND)
        goto out_rollback;
    *version = (text != NULL ? strtoll(text, NULL, 10) : 0) + 1;
    snprintf(buf, sizeof(buf), "%lld", (long long)*version);
    ret = meta_set_locked(db, "catalog_version", buf);
    if (ret != CF_OK)
        goto out_rollback;
    if (job != NULL)
        job->version = *version;
    ret = job_store_locked(db, name, job, *version, deleted_at_ms, &written, &created);
    if (ret != CF_OK)
        goto out_rollback;
    free(text);
    ret = db_commit(db);
    if (ret == CF_OK && written)
        report_job(db, name, job, created);
    return ret;

out_rollback:
    free(text);
    db_rollback(db);
    return ret;
}

/* ---- fences ---- */

int db_fence_read(struct db *db, const char *job, int64_t *token, int64_t *last_ms)
{
    sqlite3_stmt *stmt = prepare(db, "SELECT token, last FROM fences WHERE job = ?");
    int rc, ret = CF_OK;

    *token = 0;
    *last_ms = 0;
    if (stmt == NULL)
        return CF_ERR_DB;
    bind_text(stmt, 1, job);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *token = sqlite3_column_int64(stmt, 0);
        *last_ms = sqlite3_column_int64(stmt, 1);
    } else if (rc != SQLITE_DONE) {
        ret = db_fail(db, "fence read");
    }
    finish(db, stmt);
    return ret;
}

int db_fence_commit(struct db *db, const char *job, int64_t token, int64_t slot_ms, bool advance)
{
    sqlite3_stmt *stmt = prepare(db, "INSERT INTO fences (job, token, last) VALUES (?1, ?2, ?3) "
                                     "ON CONFLICT (job) DO UPDATE SET"
                                     " token = max(token, excluded.token),"
                                     " last = max(last, excluded.last)");

    if (stmt != NULL) {
        bind_text(stmt, 1, job);
        sqlite3_bind_int64(stmt, 2, token);
        sqlite3_bind_int64(stmt, 3, advance ? slot_ms : 0);
    }
    return step_done(db, stmt, "fence commit");
}

int db_fence_last_many(struct db *db, const char *const *jobs, size_t n, int64_t *last_ms)
{
    return read_int_per_job(db, "SELECT last FROM fences WHERE job = ?", "fence last", jobs, n,
                            last_ms);
}

/* ---- runs ---- */

int64_t db_run_sort_at(const struct run *run)
{
    if (run->trigger != RUN_TRIGGER_MANUAL && run->trigger != RUN_TRIGGER_RETRY &&
        run->scheduled_at_ms != 0)
        return run->scheduled_at_ms;
    return run->started_at_ms != 0 ? run->started_at_ms : run->scheduled_at_ms;
}

/*
 * The merge key of a stored or incoming run (DESIGN §4.7), the order of
 * run_merge_compare() as an SQL row value: a record replaces the stored one
 * of the same id only when its key is greater, so every instance keeps the
 * same record whatever order they arrive in, and writing the stored state
 * again changes nothing. NULL texts sort first, as in run_merge_compare().
 */
#define RUN_MERGE_TEXT_SQL(col) "(" col " IS NOT NULL), coalesce(" col ", '')"
#define RUN_MERGE_KEY_SQL(t)                                                                       \
    "(coalesce(" t ".fencing_token, 0) > 0,"                                                       \
    " " t ".status IN ('succeeded', 'failed', 'fenced'), coalesce(" t ".fencing_token, 0),"        \
    " " t ".status <> 'running',"                                                                  \
    " (CASE " t ".status WHEN 'running' THEN 0 WHEN 'skipped' THEN 1 WHEN 'lost' THEN 2"           \
    " WHEN 'missed' THEN 3 WHEN 'fenced' THEN 4 WHEN 'failed' THEN 5 WHEN 'succeeded' THEN 6"      \
    " ELSE -1 END),"                                                                               \
    " " t ".attempts, coalesce(" t ".finished_at, 0), coalesce(" t                                 \
    ".started_at, 0), " RUN_MERGE_TEXT_SQL(t ".instance") ", " RUN_MERGE_TEXT_SQL(                 \
        t ".reason") ", " RUN_MERGE_TEXT_SQL(t ".error") ")"

/*
 * Upserts one run; the lock is held. *changed says whether the stored state
 * changed.
 */
static int run_upsert_locked(struct db *db, const struct run *run, bool *changed)
{
    sqlite3_stmt *stmt = prepare(
        db, "INSERT INTO runs (id, job, trigger, scheduled_at, started_at, finished_at,"
            " status, reason, fencing_token, instance, attempts, http_status, duration_ms,"
            " error, response_excerpt, lease_lost, sort_at, lag_ms, retry_of, attempt_log) VALUES"
            " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,"
            " ?19, ?20)"
            " ON CONFLICT (id) DO UPDATE SET trigger = excluded.trigger,"
            " scheduled_at = excluded.scheduled_at, started_at = excluded.started_at,"
            " finished_at = excluded.finished_at, status = excluded.status,"
            " reason = excluded.reason, fencing_token = excluded.fencing_token,"
            " instance = excluded.instance, attempts = excluded.attempts,"
            " http_status = excluded.http_status, duration_ms = excluded.duration_ms,"
            " error = excluded.error, response_excerpt = excluded.response_excerpt,"
            " lease_lost = excluded.lease_lost, sort_at = excluded.sort_at,"
            " lag_ms = excluded.lag_ms, retry_of = excluded.retry_of,"
            " attempt_log = excluded.attempt_log"
            " WHERE " RUN_MERGE_KEY_SQL("excluded") " > " RUN_MERGE_KEY_SQL("runs"));
    int rc;

    if (stmt == NULL)
        return CF_ERR_DB;
    bind_text(stmt, 1, run->id);
    bind_text(stmt, 2, run->job);
    bind_text(stmt, 3, run_trigger_name(run->trigger));
    bind_int_or_null(stmt, 4, run->scheduled_at_ms);
    bind_int_or_null(stmt, 5, run->started_at_ms);
    bind_int_or_null(stmt, 6, run->finished_at_ms);
    bind_text(stmt, 7, run_status_name(run->status));
    bind_text(stmt, 8, run->reason);
    bind_int_or_null(stmt, 9, run->fencing_token);
    bind_text(stmt, 10, run->instance);
    sqlite3_bind_int(stmt, 11, run->attempts);
    bind_int_or_null(stmt, 12, run->http_status);
    if (run->finished_at_ms != 0 && run->started_at_ms != 0)
        sqlite3_bind_int64(stmt, 13, run->duration_ms);
    else
        sqlite3_bind_null(stmt, 13);
    bind_text(stmt, 14, run->error);
    bind_text(stmt, 15, run->response_excerpt);
    sqlite3_bind_int(stmt, 16, run->lease_lost);
    sqlite3_bind_int64(stmt, 17, db_run_sort_at(run));
    if (run->has_lag)
        sqlite3_bind_int64(stmt, 18, run->lag_ms);
    bind_text(stmt, 19, run->retry_of);
    if (run->attempt_log_count > 0) {
        json_t *list = run_attempt_log_to_json(run);
        char *log = list != NULL ? json_dumps(list, JSON_COMPACT) : NULL;

        json_decref(list);
        if (log == NULL) {
            finish(db, stmt);
            return CF_ERR_NOMEM;
        }
        sqlite3_bind_text(stmt, 20, log, -1, free);
    }
    rc = sqlite3_step(stmt);
    *changed = rc == SQLITE_DONE && sqlite3_changes(db->conn) > 0;
    finish(db, stmt);
    if (rc != SQLITE_DONE)
        return db_fail(db, "run upsert");
    return CF_OK;
}

/*
 * Queues run's state in the outbox (the lock is held, within a
 * transaction). Returns CF_OK, CF_ERR_NOMEM or CF_ERR_DB.
 */
static int outbox_add_locked(struct db *db, const struct run *run)
{
    json_t *doc = run_to_json(run);
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    sqlite3_stmt *stmt;

    json_decref(doc);
    if (text == NULL)
        return CF_ERR_NOMEM;
    stmt = prepare(db, "INSERT INTO outbox (run_id, doc) VALUES (?1, ?2)");
    if (stmt == NULL) {
        free(text);
        return CF_ERR_DB;
    }
    bind_text(stmt, 1, run->id);
    sqlite3_bind_text(stmt, 2, text, -1, free);
    return step_done(db, stmt, "outbox insert");
}

int db_run_upsert(struct db *db, const struct run *run)
{
    return db_run_record(db, &run, 1, false);
}

int db_run_upsert_many(struct db *db, const struct run *const *runs, size_t count)
{
    return db_run_record(db, runs, count, false);
}

int db_run_record(struct db *db, const struct run *const *runs, size_t count, bool outbox)
{
    bool one = false;
    bool *changed;
    int ret;

    if (count == 0)
        return CF_OK;
    /* A single run, the scheduler's common case, needs neither an allocation nor a transaction. */
    changed = count == 1 ? &one : calloc(count, sizeof(*changed));
    if (changed == NULL)
        return CF_ERR_NOMEM;
    if (count == 1 && !outbox) {
        pthread_mutex_lock(&db->lock);
        ret = run_upsert_locked(db, runs[0], &changed[0]);
        pthread_mutex_unlock(&db->lock);
    } else {
        ret = db_begin(db);
        for (size_t i = 0; i < count && ret == CF_OK; i++) {
            ret = run_upsert_locked(db, runs[i], &changed[i]);
            /* A state the history did not take is older than one already queued. */
            if (ret == CF_OK && outbox && changed[i])
                ret = outbox_add_locked(db, runs[i]);
            if (ret != CF_OK)
                db_rollback(db);
        }
        if (ret == CF_OK)
            ret = db_commit(db);
    }
    for (size_t i = 0; ret == CF_OK && db->observer.run_changed != NULL && i < count; i++)
        if (changed[i])
            db->observer.run_changed(db->observer.ctx, runs[i]);
    if (changed != &one)
        free(changed);
    return ret;
}

/* ---- outbox ---- */

void db_outbox_entries_free(struct db_outbox_entry *entries, size_t count)
{
    for (size_t i = 0; entries != NULL && i < count; i++)
        free(entries[i].doc);
    free(entries);
}

int db_outbox_peek(struct db *db, size_t limit, struct db_outbox_entry **entries, size_t *count)
{
    struct db_outbox_entry *list = calloc(limit ? limit : 1, sizeof(*list));
    sqlite3_stmt *stmt;
    size_t n = 0;
    int rc = SQLITE_DONE, ret = CF_OK;

    *entries = NULL;
    *count = 0;
    if (list == NULL)
        return CF_ERR_NOMEM;
    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "SELECT seq, doc FROM outbox ORDER BY seq LIMIT ?");
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out;
    }
    sqlite3_bind_int64(stmt, 1, (int64_t)limit);
    while (n < limit && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        list[n].seq = sqlite3_column_int64(stmt, 0);
        list[n].doc = column_strdup(stmt, 1);
        if (list[n].doc == NULL) {
            ret = CF_ERR_NOMEM;
            break;
        }
        n++;
    }
    if (ret == CF_OK && n < limit && rc != SQLITE_DONE)
        ret = db_fail(db, "outbox read");
out:
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    if (ret != CF_OK) {
        db_outbox_entries_free(list, n);
        return ret;
    }
    *entries = list;
    *count = n;
    return CF_OK;
}

int db_outbox_delete(struct db *db, const int64_t *seqs, size_t count)
{
    sqlite3_stmt *stmt;
    int ret;

    if (count == 0)
        return CF_OK;
    ret = db_begin(db);
    if (ret != CF_OK)
        return ret;
    stmt = prepare(db, "DELETE FROM outbox WHERE seq = ?");
    for (size_t i = 0; stmt != NULL && i < count; i++) {
        sqlite3_bind_int64(stmt, 1, seqs[i]);
        if (sqlite3_step(stmt) != SQLITE_DONE) {
            finish(db, stmt);
            stmt = NULL;
            db_fail(db, "outbox delete");
        }
        if (stmt != NULL)
            sqlite3_reset(stmt);
    }
    if (stmt == NULL) {
        db_rollback(db);
        return CF_ERR_DB;
    }
    finish(db, stmt);
    return db_commit(db);
}

int db_outbox_count(struct db *db, int64_t *count)
{
    sqlite3_stmt *stmt;
    int ret = CF_ERR_DB;

    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "SELECT count(*) FROM outbox");
    if (stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW) {
        *count = sqlite3_column_int64(stmt, 0);
        ret = CF_OK;
    }
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

#define RUN_COLUMNS                                                                                \
    "id, job, trigger, scheduled_at, started_at, finished_at, status, reason, fencing_token,"      \
    " instance, attempts, http_status, duration_ms, error, response_excerpt, lease_lost, sort_at," \
    " lag_ms, retry_of, attempt_log"

/* Reads a stored attempt_log into run; one that cannot be read leaves the run without one. */
static void run_attempt_log_parse(const char *text, struct run *run)
{
    json_t *list = json_loads(text, 0, NULL);

    run_attempt_log_from_json(list, run);
    json_decref(list);
}

static void run_from_row(sqlite3_stmt *stmt, struct run *run)
{
    const char *text;
    int value;

    memset(run, 0, sizeof(*run));
    snprintf(run->id, sizeof(run->id), "%s", sqlite3_column_text(stmt, 0));
    run->job = column_strdup(stmt, 1);
    value = run_trigger_parse((const char *)sqlite3_column_text(stmt, 2));
    run->trigger = value < 0 ? RUN_TRIGGER_SCHEDULE : (enum run_trigger)value;
    run->scheduled_at_ms = sqlite3_column_int64(stmt, 3);
    run->started_at_ms = sqlite3_column_int64(stmt, 4);
    run->finished_at_ms = sqlite3_column_int64(stmt, 5);
    text = (const char *)sqlite3_column_text(stmt, 6);
    value = text ? run_status_parse(text) : -1;
    run->status = value < 0 ? RUN_FAILED : (enum run_status)value;
    run->reason = column_strdup(stmt, 7);
    run->fencing_token = sqlite3_column_int64(stmt, 8);
    run->instance = column_strdup(stmt, 9);
    run->attempts = sqlite3_column_int(stmt, 10);
    run->http_status = sqlite3_column_int(stmt, 11);
    run->duration_ms = sqlite3_column_int64(stmt, 12);
    run->error = column_strdup(stmt, 13);
    run->response_excerpt = column_strdup(stmt, 14);
    run->lease_lost = sqlite3_column_int(stmt, 15) != 0;
    run->has_lag = sqlite3_column_type(stmt, 17) != SQLITE_NULL;
    run->lag_ms = sqlite3_column_int64(stmt, 17);
    run->retry_of = column_strdup(stmt, 18);
    text = (const char *)sqlite3_column_text(stmt, 19);
    if (text != NULL)
        run_attempt_log_parse(text, run);
}

int db_run_get(struct db *db, const char *id, struct run *run)
{
    sqlite3_stmt *stmt;
    int rc, ret = CF_ERR_NOT_FOUND;

    memset(run, 0, sizeof(*run));
    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "SELECT " RUN_COLUMNS " FROM runs WHERE id = ?");
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out;
    }
    bind_text(stmt, 1, id);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        run_from_row(stmt, run);
        ret = CF_OK;
    } else if (rc != SQLITE_DONE) {
        ret = db_fail(db, "run get");
    }
out:
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

/*
 * Steps stmt (prepared with the lock held; NULL when preparing failed) into
 * a new array of at most limit runs, then finalizes it and releases the
 * lock. On CF_OK, *runs (run_clear() each, then free()) and *count hold
 * them and *more (may be NULL) says whether a further row followed; on an
 * error nothing is kept.
 */
static int collect_runs(struct db *db, sqlite3_stmt *stmt, size_t limit, const char *what,
                        struct run **runs, size_t *count, bool *more)
{
    struct run *items = calloc(limit ? limit : 1, sizeof(*items));
    size_t n = 0;
    int rc = SQLITE_DONE, ret = CF_OK;

    *runs = NULL;
    *count = 0;
    if (more != NULL)
        *more = false;
    if (stmt == NULL || items == NULL) {
        ret = stmt == NULL ? CF_ERR_DB : CF_ERR_NOMEM;
        goto out;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (n == limit) {
            if (more != NULL)
                *more = true;
            break;
        }
        run_from_row(stmt, &items[n++]);
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        ret = db_fail(db, what);
out:
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    if (ret != CF_OK) {
        for (size_t i = 0; i < n; i++)
            run_clear(&items[i]);
        free(items);
        return ret;
    }
    *runs = items;
    *count = n;
    return CF_OK;
}

int db_run_list(struct db *db, const struct db_run_query *query, struct run **runs, size_t *count,
                bool *more)
{
    sqlite3_stmt *stmt;
    char sql[1024];

    /*
     * Only the filters given go into the statement, so that SQLite can pick
     * the index that matches them (runs_by_job, runs_by_status,
     * runs_by_instance, runs_by_trigger).
     */
    snprintf(sql, sizeof(sql),
             "SELECT " RUN_COLUMNS " FROM runs WHERE sort_at >= ?3 AND sort_at < ?4%s%s%s%s%s"
             " ORDER BY sort_at DESC, id DESC LIMIT ?8",
             query->job != NULL ? " AND job = ?1" : "",
             query->status >= 0 ? " AND status = ?2" : "",
             query->instance != NULL ? " AND instance = ?9" : "",
             query->trigger >= 0 ? " AND trigger = ?10" : "",
             query->has_cursor ? " AND (sort_at < ?6 OR (sort_at = ?6 AND id < ?7))" : "");
    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, sql);
    if (stmt != NULL) {
        if (query->job != NULL)
            bind_text(stmt, 1, query->job);
        if (query->status >= 0)
            bind_text(stmt, 2, run_status_name((enum run_status)query->status));
        sqlite3_bind_int64(stmt, 3, query->since_ms);
        sqlite3_bind_int64(stmt, 4, query->until_ms);
        if (query->has_cursor) {
            sqlite3_bind_int64(stmt, 6, query->cursor_sort_at);
            bind_text(stmt, 7, query->cursor_id);
        }
        sqlite3_bind_int(stmt, 8, query->limit + 1);
        if (query->instance != NULL)
            bind_text(stmt, 9, query->instance);
        if (query->trigger >= 0)
            bind_text(stmt, 10, run_trigger_name((enum run_trigger)query->trigger));
    }
    return collect_runs(db, stmt, (size_t)query->limit, "run list", runs, count, more);
}

int db_run_job_health(struct db *db,
                      void (*each)(void *ctx, const char *job, int64_t last_success_ms,
                                   int64_t last_failure_ms, int64_t consecutive_failures),
                      void *ctx)
{
    sqlite3_stmt *stmt;
    int rc = SQLITE_DONE, ret = CF_OK;

    pthread_mutex_lock(&db->lock);
    /* One pass over the history at start; from then on the observers keep the values. */
    stmt = prepare(
        db, "WITH s AS (SELECT job, max(coalesce(finished_at, scheduled_at, 0)) AS at FROM runs"
            "   WHERE status = 'succeeded' GROUP BY job),"
            " f AS (SELECT runs.job, max(coalesce(finished_at, scheduled_at, 0)) AS at,"
            "   sum(coalesce(finished_at, scheduled_at, 0) > coalesce(s.at, 0)) AS n"
            "   FROM runs LEFT JOIN s ON s.job = runs.job"
            "   WHERE status IN ('failed', 'fenced', 'missed', 'lost') GROUP BY runs.job)"
            " SELECT s.job, s.at, 0, 0 FROM s WHERE s.job NOT IN (SELECT job FROM f)"
            " UNION ALL SELECT f.job, coalesce(s.at, 0), f.at, f.n FROM f"
            "   LEFT JOIN s ON s.job = f.job");
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        each(ctx, (const char *)sqlite3_column_text(stmt, 0), sqlite3_column_int64(stmt, 1),
             sqlite3_column_int64(stmt, 2), sqlite3_column_int64(stmt, 3));
    if (rc != SQLITE_DONE)
        ret = db_fail(db, "run job health");
out:
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_run_previous_status(struct db *db, const struct run *run, int *status)
{
    sqlite3_stmt *stmt;
    int rc, ret = CF_ERR_NOT_FOUND;

    *status = -1;
    pthread_mutex_lock(&db->lock);
    /* runs_by_job from run's position down: the newest ended run before it. */
    stmt = prepare(db, "SELECT status FROM runs WHERE job = ?1 AND (sort_at < ?2 OR"
                       " (sort_at = ?2 AND id < ?3)) AND status NOT IN ('running', 'skipped')"
                       " ORDER BY sort_at DESC, id DESC LIMIT 1");
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out;
    }
    bind_text(stmt, 1, run->job);
    sqlite3_bind_int64(stmt, 2, db_run_sort_at(run));
    bind_text(stmt, 3, run->id);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *status = run_status_parse((const char *)sqlite3_column_text(stmt, 0));
        ret = CF_OK;
    } else if (rc != SQLITE_DONE) {
        ret = db_fail(db, "run previous status");
    }
out:
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_run_latest(struct db *db, const char *job, struct run *run)
{
    sqlite3_stmt *stmt;
    int rc, ret = CF_ERR_NOT_FOUND;

    memset(run, 0, sizeof(*run));
    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "SELECT " RUN_COLUMNS " FROM runs WHERE job = ?"
                       " ORDER BY sort_at DESC, id DESC LIMIT 1");
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out;
    }
    bind_text(stmt, 1, job);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        run_from_row(stmt, run);
        ret = CF_OK;
    } else if (rc != SQLITE_DONE) {
        ret = db_fail(db, "run latest");
    }
out:
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_run_last_slot(struct db *db, const char *job, int64_t *slot_ms)
{
    sqlite3_stmt *stmt;
    int ret = CF_ERR_DB;

    *slot_ms = 0;
    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "SELECT coalesce(max(scheduled_at), 0) FROM runs"
                       " WHERE job = ? AND trigger NOT IN ('manual', 'retry')");
    if (stmt != NULL) {
        bind_text(stmt, 1, job);
        if (sqlite3_step(stmt) == SQLITE_ROW) {
            *slot_ms = sqlite3_column_int64(stmt, 0);
            ret = CF_OK;
        } else {
            ret = db_fail(db, "run last slot");
        }
    }
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_run_running(struct db *db, const char *instance, size_t limit, struct run **runs,
                   size_t *count)
{
    sqlite3_stmt *stmt;

    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, instance != NULL ? "SELECT " RUN_COLUMNS " FROM runs"
                                          " WHERE status = 'running' AND instance = ?2 LIMIT ?1"
                                        : "SELECT " RUN_COLUMNS " FROM runs"
                                          " WHERE status = 'running' LIMIT ?1");
    if (stmt != NULL) {
        sqlite3_bind_int64(stmt, 1, (sqlite3_int64)limit);
        if (instance != NULL)
            bind_text(stmt, 2, instance);
    }
    return collect_runs(db, stmt, limit, "running runs", runs, count, NULL);
}

int db_job_max_lease(struct db *db, int64_t *lease_ms)
{
    sqlite3_stmt *stmt;
    int ret = CF_ERR_DB;

    *lease_ms = 0;
    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "SELECT coalesce(max(json_extract(doc, '$.lease_ms')), 0) FROM jobs"
                       " WHERE deleted_at IS NULL");
    if (stmt != NULL) {
        if (sqlite3_step(stmt) == SQLITE_ROW) {
            *lease_ms = sqlite3_column_int64(stmt, 0);
            ret = CF_OK;
        } else {
            ret = db_fail(db, "max lease");
        }
    }
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

/* Runs a DELETE prepared by the caller and adds its changes to *deleted. */
static int prune_step(struct db *db, sqlite3_stmt *stmt, int *deleted)
{
    int ret = step_done(db, stmt, "run prune");

    if (ret == CF_OK)
        *deleted += sqlite3_changes(db->conn);
    return ret;
}

int db_run_prune(struct db *db, int64_t before_ms, int batch, int *deleted)
{
    sqlite3_stmt *stmt;
    int ret;

    *deleted = 0;
    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "DELETE FROM runs WHERE rowid IN (SELECT rowid FROM runs"
                       " WHERE sort_at < ? AND status != 'running' LIMIT ?)");
    if (stmt != NULL) {
        sqlite3_bind_int64(stmt, 1, before_ms);
        sqlite3_bind_int(stmt, 2, batch);
    }
    ret = prune_step(db, stmt, deleted);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_run_jobs_over(struct db *db, int keep, char ***jobs, size_t *count)
{
    sqlite3_stmt *stmt;
    char **names = NULL;
    size_t used = 0, cap = 0;
    int rc, ret = CF_OK;

    pthread_mutex_lock(&db->lock);
    stmt = prepare(db, "SELECT job FROM runs GROUP BY job HAVING count(*) > ?");
    if (stmt == NULL) {
        ret = CF_ERR_DB;
        goto out;
    }
    sqlite3_bind_int(stmt, 1, keep);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        char *name = strdup((const char *)sqlite3_column_text(stmt, 0));

        if (used == cap) {
            size_t grown = cap ? cap * 2 : 16;
            char **bigger = realloc(names, grown * sizeof(*names));

            if (bigger == NULL) {
                free(name);
                name = NULL;
            } else {
                names = bigger;
                cap = grown;
            }
        }
        if (name == NULL) {
            ret = CF_ERR_NOMEM;
            break;
        }
        names[used++] = name;
    }
    if (ret == CF_OK && rc != SQLITE_DONE)
        ret = db_fail(db, "runs per job");
out:
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    if (ret != CF_OK) {
        for (size_t i = 0; i < used; i++)
            free(names[i]);
        free(names);
        names = NULL;
        used = 0;
    }
    *jobs = names;
    *count = used;
    return ret;
}

int db_run_prune_job(struct db *db, const char *job, int keep, int batch, int *deleted)
{
    sqlite3_stmt *stmt;
    int ret;

    *deleted = 0;
    pthread_mutex_lock(&db->lock);
    /* Walks the runs_by_job index past the newest keep rows. */
    stmt = prepare(db, "DELETE FROM runs WHERE rowid IN (SELECT rowid FROM runs WHERE job = ?1"
                       " ORDER BY sort_at DESC, id DESC LIMIT ?3 OFFSET ?2)");
    if (stmt != NULL) {
        bind_text(stmt, 1, job);
        sqlite3_bind_int(stmt, 2, keep);
        sqlite3_bind_int(stmt, 3, batch);
    }
    ret = prune_step(db, stmt, deleted);
    pthread_mutex_unlock(&db->lock);
    return ret;
}

int db_check(struct db *db)
{
    sqlite3_stmt *stmt;
    int ret = CF_ERR_DB;

    pthread_mutex_lock(&db->lock);
    /* A read through the connection, in time independent of the database's size. */
    stmt = prepare(db, "SELECT count(*) FROM meta");
    if (stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW)
        ret = CF_OK;
    finish(db, stmt);
    pthread_mutex_unlock(&db->lock);
    return ret;
}
