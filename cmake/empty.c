/* Keeps a library target valid while its folder has no sources yet. */
typedef int tv_empty_translation_unit;
