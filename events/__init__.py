"""Pure event contracts and time primitives shared by features, labels and streams."""
