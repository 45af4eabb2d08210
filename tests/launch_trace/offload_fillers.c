/* launch_trace/offload.sh: link fillers for the offload's paths no scenario
 * takes (disk-tier reads, packed decodes, products up through a mapping);
 * each answers 0 and logs nothing, so reaching one would show as a missing
 * call in the log, not a crash. Linked into the build of the tree under test
 * only (the older commit has none of these). */
int lrun_disk_reader_add(void) { return 0; }
int lrun_disk_reader_free(void) { return 0; }
int lrun_disk_reader_init(void) { return 0; }
int lrun_disk_reader_read(void) { return 0; }
int lrun_disk_reader_stats(void) { return 0; }
int lrun_k_copy_mapped(void) { return 0; }
int lrun_k_packed_decode(void) { return 0; }
int lrun_packed_decode_range(void) { return 0; }
int lrun_packed_decode_range_mt(void) { return 0; }
