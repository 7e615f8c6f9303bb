/*
 * data_text.h - reading the unit tests' data files (tests/data): the
 * helpers every table-driven test needs for its lines.
 */
#ifndef CF_TEST_DATA_TEXT_H
#define CF_TEST_DATA_TEXT_H

/*
 * Strips the blanks (spaces, tabs) before text and the blanks and line
 * endings (\n, \r) after it, in place. Returns the first character kept.
 */
char *data_trim(char *text);

#endif
