/* Fixture for the check_enter.pl selftest: it must flag exactly the three
 * effml_sel_bad_* definitions and report effml_sel_missing as not found. */
static int helper(effml_context *ctx) { return ctx != 0; }

effml_status effml_sel_good_multi_line(effml_context *ctx, int x) {
  EFFML__ENTER(ctx);
  return helper(ctx) + x;
}
effml_status effml_sel_good_one_line(effml_context *ctx) { EFFML__ENTER(ctx); return helper(ctx); }
effml_status effml_sel_bad_one_line(effml_context *ctx) { return helper(ctx); }
effml_status effml_sel_bad_after_one_liner(effml_context *ctx,
                                           int x) {
  /* EFFML__ENTER(ctx); in a comment does not count */
  return helper(ctx) + x;
}
effml_status effml_sel_bad_other_name(effml_context *c) { EFFML__ENTER(ctx); return helper(c); }
int effml_sel_const_ctx(const effml_context *ctx) { return ctx != 0; }
