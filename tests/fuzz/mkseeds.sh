#!/bin/sh
# mkseeds.sh: writes ops_fuzz's seed corpus, corpus/ops/, one file per `seed` line.
# The byte format is in ops_fuzz.c's header comment; the first two bytes of each
# seed are the header (batch_limit, map size, batch_interval), then ops and their
# arguments, in hex. regress-* seeds are inputs that found a defect.
set -eu
cd "$(dirname "$0")/corpus/ops"

# seed NAME BYTE...: BYTEs are hex, or one of the opcode names below.
seed() {
    f=$1
    shift
    : >"$f"
    for b; do
        case $b in
        L) b=00 ;; U) b=01 ;; P) b=02 ;; D) b=03 ;; C) b=04 ;; X) b=05 ;; T) b=06 ;;
        VO) b=07 ;; VR) b=08 ;; VC) b=09 ;; CM) b=0a ;; FC) b=0b ;; H) b=0c ;;
        R) b=0d ;; SO) b=0e ;; SW) b=0f ;; DF) b=10 ;; RB) b=11 ;; EX) b=12 ;;
        esac
        printf "\\$(printf %03o "0x$b")" >>"$f"
    done
}

# Buckets: 00 "\0\1\xff", 01 "a", 02 "key", 07 "" (invalid). Keys: 04 "a", 08 "b",
# 0c "\xff", 05 "a\0", 15 "aa", 01 "\0\0"; f0 N BYTES... literal; fd C longest;
# fe N too long. Values: N BYTES..., or ff C big. Ranges: B MODE KEYS LIMIT.
seed put-read     03 03 L C 01 P 01 05 03 78 79 7a P 01 08 00 T 01 00 05 00 T 01 03 00 00 U \
                  VO 00 VR 00 01 03 00 00 VR 00 01 00 08 00
seed delete       0f 03 L C 02 P 02 04 01 41 P 02 08 01 42 P 02 0c 01 43 D 02 08 D 02 15 \
                  T 02 03 00 00 U FC VO 00 VR 00 02 03 00 00 D 02 04
seed drop-create  03 00 L C 00 P 00 04 01 41 P 00 05 01 42 U FC L X 00 T 00 03 00 00 C 00 \
                  T 00 03 00 00 P 00 08 01 43 U VO 00 VR 00 00 03 00 00 X 07 X 01
seed views        03 03 L C 01 P 01 04 01 41 U VO 00 L P 01 04 01 42 P 01 08 01 43 VO 01 \
                  VR 01 01 03 00 00 U VR 00 01 03 00 00 VR 01 01 03 00 00 FC VR 00 01 00 04 00
seed section-commit 01 03 L C 01 P 01 04 01 41 CM 00 VO 00 P 01 08 01 42 VR 00 01 03 00 00 U \
                  VO 01 VR 01 01 03 00 00 CM 00
seed commit-stop  05 02 L C 01 P 01 04 01 41 CM 0f P 01 08 00 T 01 03 00 00 C 02 U L FC H 00 \
                  DF SO SW VO 00 VR 00 01 03 00 00 R 01 L P 01 08 01 42 U
seed hash-ignore  07 03 L C 01 C 02 P 01 04 01 41 P 01 08 01 42 P 02 04 00 U H 01 01 04 \
                  H 01 02 04 H 01 07 04 H 00
seed reopen-hash  02 01 L C 00 C 01 P 00 04 02 61 62 P 01 0c 00 U R 01 L P 01 08 01 43 \
                  R 01 VO 00 VR 00 00 03 00 00 R 00
seed snapshot     04 01 L C 01 P 01 04 01 41 U SO L P 01 04 01 42 X 01 U FC SW SO SW
seed snap-dead    03 03 L C 01 P 01 04 01 41 U SO R 00 SW SO DF SW
seed defrag       06 02 L C 01 C 02 P 01 04 01 41 P 02 15 01 42 U VO 00 DF VR 00 01 03 00 00 \
                  L P 01 08 00 DF VO 01 VR 01 01 03 00 00 U R 00 VR 01 01 03 00 00
seed misuse       03 03 U P 01 04 00 T 01 03 00 00 CM 00 X 01 L L P 01 04 00 P 07 04 00 C 07 \
                  P 01 fe 00 00 C 01 P 01 fe 03 00 P 01 f0 00 00 D 01 fe 00 T 01 00 f0 00 00 \
                  T 07 03 00 00 T 01 00 fe 01 00 U U
seed max-key      03 03 L C 01 P 01 fd 61 02 61 62 P 01 fd ff 00 T 01 00 fd 61 00 \
                  T 01 01 fe 00 fd 62 00 T 01 03 fe 00 00 U R 01 VO 00 VR 00 01 00 fd ff 00
seed binary-keys  03 03 L C 00 P 00 f0 03 00 ff 00 02 ff 00 P 00 f0 01 00 00 \
                  P 00 f0 02 ff ff 03 00 01 02 P 00 f0 28 \
                  41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 \
                  41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 28 \
                  42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 \
                  42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 \
                  T 00 03 00 00 U FC VO 00 VR 00 00 02 f0 01 ff 00
seed rotations    00 00 L C 01 U L P 01 04 00 U L P 01 08 00 U L P 01 0c 00 U L P 01 05 00 U \
                  L D 01 04 U L P 01 15 01 41 U L P 01 01 01 42 U VO 00 VR 00 01 03 00 00
seed small-map    00 03 L C 01 C 02 P 01 fd 41 28 \
                  58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 \
                  58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 \
                  P 01 fd 42 00 P 01 fd 43 00 P 02 fd 44 00 P 02 fd 45 00 P 01 fd 46 00 \
                  P 02 fd 47 00 P 01 fd 48 00 U FC L P 01 fd 49 00 P 02 fd 4a 00 U H 00
seed limits       03 03 L C 02 P 02 04 00 P 02 08 00 P 02 0c 00 P 02 05 00 P 02 15 00 \
                  P 02 01 00 T 02 03 00 01 T 02 03 00 02 T 02 03 00 03 T 02 03 00 06 \
                  U VO 00 VR 00 02 02 0c 02 VR 00 02 01 04 0c 03
seed range-modes  03 03 L C 01 P 01 04 00 P 01 08 00 P 01 0c 00 T 01 00 08 00 \
                  T 01 01 04 0c 00 T 01 01 0c 04 00 T 01 02 08 00 T 01 03 08 00 \
                  T 01 01 04 04 00 T 01 00 01 00 T 02 03 00 00 U
seed view-slots   03 03 L C 01 P 01 04 00 U VO 00 VO 01 VC 00 VR 00 01 03 00 00 \
                  VR 01 01 03 00 00 VO 01 VC 01 VC 01
seed views-reopen 05 01 L C 01 P 01 04 00 U VO 00 SO R 00 VR 00 01 03 00 00 SW VC 00 \
                  VO 00 VR 00 01 03 00 00
seed empty-value  03 03 L C 01 P 01 04 00 P 01 08 28 \
                  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
                  ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff \
                  P 01 04 00 T 01 00 04 00 U FC T 01 00 04 00 L T 01 00 08 00 U
seed big-values   00 02 L C 01 P 01 04 ff 00 P 01 08 ff ff P 01 0c ff 10 U FC SO L P 01 04 ff 20 \
                  D 01 08 U SW DF VO 00 VR 00 01 03 00 00 R 01 H 00
seed bg-commits   0a 00 L C 00 C 01 C 02 P 00 04 00 P 01 04 00 P 02 04 00 U L P 00 08 00 \
                  X 01 P 02 08 00 U L C 01 P 01 0c 00 U VO 00 L P 00 0c 00 D 00 04 U \
                  VR 00 00 03 00 00 VR 00 01 03 00 00 H 00 R 01
seed export       03 02 L C 00 C 01 C 02 P 00 04 01 41 P 01 fd 61 ff 20 P 01 08 ff 80 P 02 04 00 \
                  EX 00 U EX 00 VO 00 L P 02 08 01 42 X 00 U EX 01 SO DF EX 00 CM 0f EX 01 \
                  L D 01 04 RB EX 00

# Defrag gave its copy only the source's map, which after a defrag or an open with a
# smaller mmap_size is exactly the data's size: MDB_MAP_FULL (fixed in defrag.c's fill).
seed regress-defrag-map-full     0a 00 L C 00 P 00 10 ff 0d DF DF
seed regress-defrag-after-reopen 0a 03 L C 00 P 00 10 ff 0d U R 00 DF
