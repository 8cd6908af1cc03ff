# not canonical: "04" is ignored
