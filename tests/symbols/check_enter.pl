#!/usr/bin/perl
# Error-prefix test (CTest `errors_name_the_call`): every exported function
# (listed in the version script) that takes a non-const `effml_context *`
# starts its body with EFFML__ENTER(<that argument>), which records the call's
# name in the context so that every error message starts with it
# (docs/conventions.md, "Errors").
#   check_enter.pl <lib/libeffml.map> <lib dir>
# Definitions are found whatever their layout: the body on the next line or
# on the same line (`T effml_x(effml_context *ctx) { return f(ctx); }`).  An
# exported symbol whose definition the scan cannot find fails the test too, so
# a layout the pattern misses cannot pass unseen.
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
  $src =~ s{/\*.*?\*/}{ }gs;   # comments may hold code-like text
  $src =~ s{//[^\n]*}{}g;
  # A definition: a line starting with the return type, the name, the
  # parameter list, then `{`.  The body is looked at, not consumed, so a
  # one-line definition does not hide the one after it.
  while ($src =~ /^[A-Za-z_][\w \*]*?\b(effml_\w+)\s*\(([^;{]*?)\)\s*\{(?=(.{0,120}))/msg) {
    my ($name, $params, $body) = ($1, $2, $3);
    next unless $exported{$name};
    $seen{$name} = 1;
    next if $name =~ /^effml_context_/ || $name =~ /_free$/;
    next unless $params =~ /(?<!const )(?<!const)\beffml_context\s*\*\s*(\w+)\s*(?:,|$)/;
    my $arg = $1;
    push @bad, "$file: $name" unless $body =~ /^\s*EFFML__ENTER\(\Q$arg\E\);/;
  }
}
my @missing = grep { !$seen{$_} } sort keys %exported;
my $fail = 0;
if (@bad) {
  print STDERR "FAIL: public functions taking a context that do not start with EFFML__ENTER(ctx):\n";
  print STDERR "  $_\n" for @bad;
  $fail = 1;
}
if (@missing) {
  print STDERR "FAIL: exported in $map but no definition found under $libdir (layout not recognised?):\n";
  print STDERR "  $_\n" for @missing;
  $fail = 1;
}
exit 1 if $fail;
printf "ok: %d exported definitions checked\n", scalar(keys %seen);
exit 0;
