# Turns a file into a C source defining `const unsigned char NAME[]` and `const size_t NAME_len`
# (the gateway's web page is compiled into the binary, so the gateway serves it with no files
# to install). Run as: cmake -DIN=file -DOUT=file.c -DNAME=symbol -P embed.cmake
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" nhex)
math(EXPR n "${nhex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
file(WRITE ${OUT} "/* generated from ${IN} by cmake/embed.cmake; do not edit */\n#include <stddef.h>\n"
     "const unsigned char ${NAME}[] = {${body}0x00};\nconst size_t ${NAME}_len = ${n};\n")
