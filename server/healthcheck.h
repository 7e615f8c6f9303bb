/*
 * healthcheck.h - `cronfence --healthcheck [flags]`: the container's health
 * check, built into the binary so that it reads the address exactly as the
 * server does.
 *
 * The address is --listen from the flags and environment (CRONFENCE_LISTEN)
 * as config_parse() reads them; in a container whose process 1 is cronfence
 * itself, the flags of process 1 are read too (a HEALTHCHECK command does
 * not see the arguments given to the container), after the environment and
 * before the check's own flags. An address that serves every interface
 * (0.0.0.0, ::) is asked on its loopback address; any other on itself.
 */
#ifndef CF_HEALTHCHECK_H
#define CF_HEALTHCHECK_H

/*
 * GET /healthz on the address the flags name, 3 s at most. argv[0] is
 * "--healthcheck". Returns the process exit status: 0 when it answered 200,
 * 1 when it did not (a line on standard error says why), 2 on bad flags.
 */
int healthcheck_main(int argc, char **argv);

#endif
