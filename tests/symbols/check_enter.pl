#!/usr/bin/perl
# Error-prefix test (CTest `errors_name_the_call`): every exported function
# (listed in the version script) that takes `effml_context *ctx` starts its
# body with EFFML__ENTER(ctx), which records the call's name in the context so
# that every error message starts with it (docs/conventions.md, "Errors").
#   check_enter.pl <lib/libeffml.map> <lib dir>
# Exempt: effml_context_* (they manage the context itself) and *_free.
use strict;
use warnings;

my ($map, $libdir) = @ARGV;
open(my $mh, '<', $map) or die "check_enter: $map: $!\n";
my %exported;
while (<$mh>) { $exported{$1} = 1 if /^\s+(effml_\w+)\s*;/; }
close($mh);

my @bad;
my %seen;
for my $file (sort glob("$libdir/*/*.c")) {
  open(my $fh, '<', $file) or die "check_enter: $file: $!\n";
  local $/;
  my $src = <$fh>;
  close($fh);
  while ($src =~ /^[A-Za-z_][\w \*]*?\b(effml_\w+)\(([^;{]*?)\)\s*\{\n(.{0,80})/msg) {
    my ($name, $params, $body) = ($1, $2, $3);
    next unless $exported{$name};
    $seen{$name} = 1;
    next if $name =~ /^effml_context_/ || $name =~ /_free$/;
    next unless $params =~ /(?<!const )effml_context \*ctx\b/;
    push @bad, "$file: $name" unless $body =~ /^\s*EFFML__ENTER\(ctx\);/;
  }
}
if (@bad) {
  print STDERR "FAIL: public functions taking a context that do not start with EFFML__ENTER(ctx):\n";
  print STDERR "  $_\n" for @bad;
  exit 1;
}
printf "ok: %d exported definitions checked\n", scalar(keys %seen);
exit 0;
