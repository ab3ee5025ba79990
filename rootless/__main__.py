from rootless.entry import main

main()
